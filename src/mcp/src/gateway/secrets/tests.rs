use super::*;
use proptest::prelude::*;
use serde_json::json;

// Fake tokens are assembled at run time so that no credential-shaped literal sits in the source
// (and trips a repository's secret scanning).
const VALUE: &str = "s3cr3t-Value_with/slash+plus";

fn scanner(shapes: bool) -> Scanner {
    Scanner::new(vec![("github".into(), Secret::new(VALUE))], shapes).unwrap()
}

fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(items) => items.iter().for_each(|i| strings(i, out)),
        Value::Object(map) => {
            for (k, v) in map {
                out.push(k.clone());
                strings(v, out);
            }
        }
        Value::Null | Value::Bool(_) => {}
    }
}

#[test]
fn secret_debug_and_display_hide_the_value() {
    let s = Secret::new(VALUE);
    assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
    assert_eq!(s.to_string(), "Secret(<redacted>)");
    assert_eq!(s.expose(), VALUE);
}

#[test]
fn short_secrets_are_refused_by_name() {
    let err = Scanner::new(vec![("pin".into(), Secret::new("1234"))], false).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("`pin`") && msg.contains("4 bytes"), "{msg}");
    assert!(!msg.contains("1234"), "{msg}");
}

#[test]
fn a_secret_inside_the_redaction_mark_is_refused() {
    let err = Scanner::new(vec![("x".into(), Secret::new("REDACTED:x"))], false).unwrap_err();
    assert!(matches!(err, ScanError::InMarker { .. }), "{err}");
}

#[test]
fn finds_plain_base64_and_percent_forms() {
    let sc = scanner(false);
    let wrapped = |prefix: &str| {
        let mut text = prefix.as_bytes().to_vec();
        text.extend_from_slice(VALUE.as_bytes());
        text.extend_from_slice(b" trailing");
        text
    };
    let mut v = json!({
        "plain": format!("token={VALUE}"),
        "pct": format!("https://x/?t={}", percent_encode(VALUE, true)),
        "pct_lower": percent_encode(VALUE, false),
        "b64": STANDARD.encode(VALUE),
        "b64url": URL_SAFE_NO_PAD.encode(VALUE),
        "b64_at_1": STANDARD.encode(wrapped("a")),
        "b64_at_2": URL_SAFE.encode(wrapped("ab")),
        "b64_at_3": STANDARD_NO_PAD.encode(wrapped("abc")),
        "clean": "nothing here",
    });
    let found = sc.scan(&v);
    let pointers: Vec<&str> = found.iter().map(|f| f.pointer.as_str()).collect();
    assert_eq!(
        pointers,
        [
            "/b64",
            "/b64_at_1",
            "/b64_at_2",
            "/b64_at_3",
            "/b64url",
            "/pct",
            "/pct_lower",
            "/plain"
        ]
    );
    assert!(
        found
            .iter()
            .all(|f| f.kind == FindingKind::Secret("github".into()))
    );
    assert_eq!(found[0].encoding, Encoding::Base64);
    assert_eq!(found[5].encoding, Encoding::Percent);
    assert_eq!(sc.redact(&mut v), 8);
    assert_eq!(v["plain"], "token=[REDACTED:github]");
    assert_eq!(v["b64"], "[REDACTED:github]");
    assert_eq!(v["clean"], "nothing here");
    assert!(sc.scan(&v).is_empty());
}

#[test]
fn secrets_in_member_names_are_redacted_and_not_in_pointers() {
    let sc = scanner(false);
    let mut v = json!({ "a": { (format!("k-{VALUE}")): [1, VALUE] } });
    let found = sc.scan(&v);
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].pointer, "/a/k-[REDACTED:github]");
    assert!(found[0].in_key);
    assert_eq!(found[1].pointer, "/a/k-[REDACTED:github]/1");
    for f in &found {
        assert!(!format!("{f:?} {f}").contains(VALUE));
    }
    assert_eq!(sc.redact(&mut v), 2);
    assert_eq!(
        v,
        json!({ "a": { "k-[REDACTED:github]": [1, "[REDACTED:github]"] } })
    );
}

#[test]
fn numbers_holding_a_secret_are_replaced() {
    let sc = Scanner::new(vec![("n".into(), Secret::new("31415926535"))], false).unwrap();
    let mut v = json!({ "n": 31415926535u64, "m": 7 });
    assert_eq!(sc.scan(&v).len(), 1);
    assert_eq!(sc.redact(&mut v), 1);
    assert_eq!(v, json!({ "n": "[REDACTED:n]", "m": 7 }));
}

#[test]
fn each_shape_is_found() {
    let sc = Scanner::new(Vec::new(), true).unwrap();
    let body = "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7dEf0h";
    let cases = [
        (format!("AKIA{}", "IOSFODNN7EXAMPLE"), Shape::AwsAccessKeyId),
        (format!("ghp_{}", &body[..36]), Shape::GithubToken),
        (format!("ghs_{}", &body[..38]), Shape::GithubToken),
        (
            format!("github_pat_11ABCDEFG0_{}", &body[..30]),
            Shape::GithubPat,
        ),
        (
            format!("xoxb-{}-{}", "1234567890", &body[..24]),
            Shape::SlackToken,
        ),
        (
            format!("-----BEGIN {}PRIVATE KEY-----\nMIIE...", "RSA "),
            Shape::PrivateKey,
        ),
        (
            format!("-----BEGIN {}PRIVATE KEY-----", ""),
            Shape::PrivateKey,
        ),
        (format!("sk-proj-{}", &body[..32]), Shape::OpenaiKey),
        (format!("sk-ant-api03-{}", &body[..32]), Shape::AnthropicKey),
        (format!("AIza{}", &body[..35]), Shape::GoogleApiKey),
        (
            format!("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.{}", &body[..20]),
            Shape::Jwt,
        ),
    ];
    for (token, shape) in cases {
        let v = json!({ "text": format!("use {token} now") });
        let found = sc.scan(&v);
        assert_eq!(found.len(), 1, "{shape:?}");
        assert_eq!(found[0].kind, FindingKind::Shape(shape));
        let (out, n) = sc.redact_str(&format!("use {token} now"));
        assert_eq!(n, 1);
        assert!(
            out.contains(&format!("[REDACTED:{}]", shape.as_str())),
            "{out}"
        );
    }
    assert!(
        sc.scan(&json!("ordinary text, sk-short, ghp_short"))
            .is_empty()
    );
    // Without shapes, only configured values count.
    assert!(
        scanner(false)
            .scan(&json!(format!("AKIA{}", "IOSFODNN7EXAMPLE")))
            .is_empty()
    );
}

#[test]
fn apply_follows_the_mode() {
    let sc = scanner(true);
    let mut v = json!({ "cmd": format!("curl -H 'Authorization: {VALUE}'") });
    let orig = v.clone();
    assert_eq!(sc.apply(ScanMode::Off, &mut v), Ok(0));
    let blocked = sc.apply(ScanMode::Block, &mut v).unwrap_err();
    assert_eq!(v, orig, "block does not change the value");
    assert_eq!(blocked.findings.len(), 1);
    let msg = blocked.to_string();
    assert_eq!(msg, "blocked: it carries github at /cmd");
    assert_eq!(sc.apply(ScanMode::Redact, &mut v), Ok(1));
    assert_eq!(sc.apply(ScanMode::Block, &mut v), Ok(0));
}

#[test]
fn debug_of_scanner_and_findings_never_prints_a_secret() {
    let sc = scanner(true);
    let dbg = format!("{sc:?}");
    assert!(dbg.contains("github") && !dbg.contains(VALUE), "{dbg}");
    assert!(!dbg.contains(&STANDARD.encode(VALUE)[..12]), "{dbg}");
    let found = sc.scan(&json!([VALUE, STANDARD.encode(VALUE)]));
    let text = format!("{found:?}");
    assert!(!text.contains(VALUE) && !text.contains(&STANDARD.encode(VALUE)[..12]));
}

#[test]
fn an_empty_scanner_finds_nothing() {
    let sc = Scanner::new(Vec::new(), false).unwrap();
    assert!(sc.is_empty());
    let mut v = json!({ "a": "AKIAIOSFODNN7EXAMPLE" });
    assert!(sc.scan(&v).is_empty());
    assert_eq!(sc.redact(&mut v), 0);
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Splices `secret` (as `form`) into the strings and member names of `v`, at positions drawn
/// from `seeds`.
fn splice(v: &mut Value, form: &str, seeds: &mut impl Iterator<Item = usize>) {
    let put = |s: &str, seed: usize| {
        let mut at = seed % (s.len() + 1);
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        format!("{}{form}{}", &s[..at], &s[at..])
    };
    match v {
        Value::String(s) => {
            if let Some(seed) = seeds.next().filter(|n| n % 2 == 0) {
                *s = put(s, seed / 2);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| splice(i, form, seeds)),
        Value::Object(map) => {
            let old = std::mem::take(map);
            for (k, mut val) in old {
                splice(&mut val, form, seeds);
                let k = match seeds.next().filter(|n| n % 3 == 0) {
                    Some(seed) => put(&k, seed / 3),
                    None => k,
                };
                map.insert(k, val);
            }
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn redaction_leaves_no_secret(
        mut v in json_value(),
        secret in "[ -~]{8,24}",
        form_ix in 0usize..8,
        seeds in prop::collection::vec(any::<usize>(), 64),
    ) {
        let sc = Scanner::new(vec![("s".into(), Secret::new(secret.clone()))], true).unwrap();
        let all_forms: Vec<String> = forms(&secret).into_iter().map(|(f, _)| f).collect();
        let form = all_forms[form_ix % all_forms.len()].clone();
        splice(&mut v, &form, &mut seeds.into_iter().cycle());
        sc.redact(&mut v);
        let mut texts = Vec::new();
        strings(&v, &mut texts);
        for text in texts {
            for f in &all_forms {
                prop_assert!(!text.contains(f.as_str()), "{text:?} still holds {f:?}");
            }
        }
        prop_assert!(sc.scan(&v).iter().all(|f| f.kind != FindingKind::Secret("s".into())));
    }

    #[test]
    fn scanning_anything_never_panics(v in json_value(), s in ".{0,200}") {
        let sc = scanner(true);
        let _ = sc.scan(&v);
        let _ = sc.redact_str(&s);
        let mut v = v;
        let _ = sc.redact(&mut v);
    }

    #[test]
    fn values_without_secrets_are_unchanged(v in json_value()) {
        let sc = scanner(false);
        let mut after = v.clone();
        prop_assume!(sc.scan(&v).is_empty());
        prop_assert_eq!(sc.redact(&mut after), 0);
        prop_assert_eq!(after, v);
    }
}
