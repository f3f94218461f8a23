//! File changes made by common file tools, seen through their arguments: `rm`/`unlink`/`rmdir`/
//! `shred` delete, `touch`/`tee`/`truncate` write, `cp`/`mv`/`install`/`ln` write their
//! destination (and `mv` deletes its sources), `dd of=` writes, `sed -i` writes its files.
//! So `write = [".git/**"]` also catches `cp x .git/config` and `tee .git/config`.

use crate::classify::Ctx;
use crate::pattern::Arg;

/// Options that take a value, per tool (so the value is not taken for a file).
fn valued(tool: &str) -> &'static [&'static str] {
    match tool {
        "touch" => &["-d", "-r", "-t", "--date", "--reference"],
        "truncate" => &["-s", "--size", "-r", "--reference"],
        "cp" | "mv" | "ln" => &["-t", "--target-directory", "-S", "--suffix"],
        "install" => &[
            "-m",
            "--mode",
            "-o",
            "--owner",
            "-g",
            "--group",
            "-t",
            "--target-directory",
            "-S",
        ],
        "shred" => &["-n", "--iterations", "-s", "--size", "--random-source"],
        "sed" => &["-e", "--expression", "-f", "--file", "-l", "--line-length"],
        _ => &[],
    }
}

/// Splits `args` into non-option words and `(option, value)` pairs.
fn split<'a>(tool: &str, args: &'a [Arg]) -> (Vec<&'a Arg>, Vec<(&'a str, Option<&'a Arg>)>) {
    let valued = valued(tool);
    let (mut words, mut opts) = (Vec::new(), Vec::new());
    let mut i = 0;
    let mut ended = false;
    while i < args.len() {
        match args[i].lit() {
            Some("--") if !ended => ended = true,
            Some(a) if !ended && a.starts_with('-') && a.len() > 1 => {
                if valued.contains(&a) {
                    opts.push((a, args.get(i + 1)));
                    i += 1;
                } else {
                    opts.push((a, None));
                }
            }
            _ => words.push(&args[i]),
        }
        i += 1;
    }
    (words, opts)
}

/// Records the writes and deletes `tool args…` makes.
pub(crate) fn record(ctx: &mut Ctx<'_>, tool: &str, args: &[Arg]) {
    let file_tool = matches!(
        tool,
        "rm" | "unlink"
            | "rmdir"
            | "shred"
            | "touch"
            | "tee"
            | "truncate"
            | "cp"
            | "mv"
            | "install"
            | "ln"
            | "dd"
            | "sed"
    );
    if !file_tool {
        // Every other program changes no file this module knows of: skip splitting its words.
        return;
    }
    let (words, opts) = split(tool, args);
    match tool {
        "rm" | "unlink" | "rmdir" | "shred" => words.iter().for_each(|w| ctx.effect(w, true)),
        "touch" | "tee" | "truncate" => words.iter().for_each(|w| ctx.effect(w, false)),
        "cp" | "mv" | "install" | "ln" => {
            let target = opts.iter().find_map(|(o, v)| match *o {
                "-t" | "--target-directory" => *v,
                _ => None,
            });
            let (dest, sources) = match target {
                Some(t) => (t, &words[..]),
                None => match words.split_last() {
                    Some((d, s)) => (*d, s),
                    None => return,
                },
            };
            ctx.effect(dest, false);
            for s in sources {
                if let (Arg::Lit(d), Arg::Lit(s)) = (dest, s) {
                    let base = s.rsplit('/').find(|p| !p.is_empty()).unwrap_or(s);
                    ctx.effect(
                        &Arg::Lit(format!("{}/{base}", d.trim_end_matches('/'))),
                        false,
                    );
                }
                if tool == "mv" {
                    ctx.effect(s, true);
                }
            }
        }
        "dd" => {
            for w in &words {
                match w {
                    Arg::Lit(s) if s.starts_with("of=") => {
                        ctx.effect(&Arg::Lit(s[3..].into()), false)
                    }
                    Arg::Lit(_) => {}
                    other => ctx.effect(other, false),
                }
            }
        }
        "sed" => {
            let in_place = opts.iter().any(|(o, _)| {
                o.starts_with("--in-place") || (!o.starts_with("--") && o.contains('i'))
            });
            let has_script = opts
                .iter()
                .any(|(o, _)| matches!(*o, "-e" | "--expression" | "-f" | "--file"));
            if in_place {
                let files = if has_script {
                    &words[..]
                } else {
                    words.get(1..).unwrap_or_default()
                };
                files.iter().for_each(|w| ctx.effect(w, false));
            }
        }
        _ => {}
    }
}
