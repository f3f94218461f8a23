//! The custom seccomp policy compiled by a fake `seccompiler-bin` that checks its argv, and the
//! compiled filter reaching Firecracker as `--seccomp-filter`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use luminaguard_firecracker::launch;
use luminaguard_firecracker::seccomp::{self, POLICY_X86_64};
use luminaguard_firecracker::testing::{ARGV_FILE, Plan};

use super::{config, images};

/// A `seccompiler-bin` that insists on `--target-arch x86_64 --input-file <f> --output-file
/// <o>`, checks the input names every thread, writes a "BPF" file and counts its runs.
pub(super) fn fake_seccompiler(dir: &Path, fail: bool) -> std::path::PathBuf {
    let path = dir.join("seccompiler-bin");
    let script = format!(
        r#"#!/bin/sh
echo run >> '{runs}'
[ "$#" -eq 6 ] || {{ echo "want 6 arguments, got $#: $*" >&2; exit 2; }}
[ "$1" = --target-arch ] && [ "$2" = x86_64 ] || {{ echo "bad arch: $1 $2" >&2; exit 2; }}
[ "$3" = --input-file ] && [ -f "$4" ] || {{ echo "bad input: $3 $4" >&2; exit 2; }}
[ "$5" = --output-file ] || {{ echo "bad output: $5" >&2; exit 2; }}
for t in vmm api vcpu; do grep -q "\"$t\"" "$4" || {{ echo "no $t thread" >&2; exit 3; }}; done
{fail}
printf 'BPF' > "$6"
"#,
        runs = dir.join("runs").display(),
        fail = if fail {
            "echo 'Error: Json Parse(...)' >&2; exit 1"
        } else {
            ""
        },
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn runs(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("runs"))
        .unwrap_or_default()
        .lines()
        .count()
}

#[tokio::test]
async fn the_policy_is_compiled_once_cached_and_passed_to_firecracker() {
    let tools = tempfile::tempdir().unwrap();
    let compiler = fake_seccompiler(tools.path(), false);
    let cache = tools.path().join("cache");
    let bpf = seccomp::compile(&compiler, POLICY_X86_64, &cache)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&bpf).unwrap(), b"BPF");
    assert_eq!(runs(tools.path()), 1);
    // Cached by digest: no second run.
    let again = seccomp::compile(&compiler, POLICY_X86_64, &cache)
        .await
        .unwrap();
    assert_eq!(again, bpf);
    assert_eq!(runs(tools.path()), 1);
    // Found next to the firecracker binary.
    let fc = tools.path().join("firecracker");
    std::fs::write(&fc, b"").unwrap();
    assert_eq!(
        seccomp::find_seccompiler(None, Some(&fc)).await,
        Some(compiler)
    );

    let img = images();
    let mut cfg = config(&img, &Plan::default());
    cfg.seccomp_filter = Some(bpf.clone());
    let vm = launch::launch(&cfg).await.unwrap();
    let argv: Vec<String> =
        serde_json::from_slice(&std::fs::read(img.sandbox.join(ARGV_FILE)).unwrap()).unwrap();
    assert_eq!(argv[4..], ["--seccomp-filter", bpf.to_str().unwrap()]);
    vm.stop(true).await;
}

#[tokio::test]
async fn a_compiler_failure_is_reported_with_its_stderr_and_leaves_no_filter() {
    let tools = tempfile::tempdir().unwrap();
    let compiler = fake_seccompiler(tools.path(), true);
    let cache = tools.path().join("cache");
    let err = seccomp::compile(&compiler, POLICY_X86_64, &cache)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("Json Parse") && text.contains("exit status: 1"),
        "{text}"
    );
    assert!(
        !std::fs::read_dir(&cache)
            .unwrap()
            .flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "bpf")),
        "a filter was left behind"
    );
    // A policy that is not seccompiler JSON is refused before the compiler runs.
    let before = runs(tools.path());
    assert!(seccomp::compile(&compiler, "[1,2]", &cache).await.is_err());
    assert_eq!(runs(tools.path()), before);
}
