//! Classifying one argv: resolving the program, unwrapping wrappers (`env`, `timeout`, `xargs`,
//! `sudo`, …), expanding shells' `-c` scripts, and marking what the policy cannot see.

use crate::classify::{Cmd, Ctx, MAX_DEPTH, Prog, Unknown};
use crate::pattern::Arg;
use crate::{effects, script};

/// Directories whose programs are trusted to be what their name says.
const SYSTEM_DIRS: &[&str] = &[
    "/bin",
    "/sbin",
    "/usr/bin",
    "/usr/sbin",
    "/usr/local/bin",
    "/usr/local/sbin",
];

/// Shells whose `-c SCRIPT` the policy parses.
const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ash", "ksh", "mksh", "yash", "posh",
];

/// Builtins that run code from a string, change what later names mean, or evaluate arithmetic
/// on variables (which bash lets run substitutions).
const EVALUATORS: &[&str] = &[
    "eval",
    "source",
    ".",
    "trap",
    "alias",
    "hash",
    "enable",
    "fc",
    "bind",
    "complete",
    "compgen",
    "mapfile",
    "readarray",
    "let",
    "shopt",
];

/// Programs that run another command in a way this policy does not unwrap.
const SPAWNERS: &[&str] = &[
    "strace",
    "ltrace",
    "gdb",
    "valgrind",
    "perf",
    "nsenter",
    "unshare",
    "flock",
    "script",
    "su",
    "runuser",
    "parallel",
    "entr",
    "firejail",
    "bwrap",
    "proot",
    "systemd-run",
    "dbus-run-session",
    "torsocks",
    "proxychains",
    "proxychains4",
    "rlwrap",
    "tmux",
    "screen",
    "at",
    "batch",
    "crontab",
    "chrt",
    "expect",
    "sudoedit",
    "pkexec",
    "inotifywait",
];

/// Variables whose value changes which program runs or makes a program run another.
pub(crate) fn dangerous_var(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "PATH",
        "ENV",
        "BASH_ENV",
        "IFS",
        "SHELLOPTS",
        "BASHOPTS",
        "PS4",
        "PROMPT_COMMAND",
        "EDITOR",
        "VISUAL",
        "NODE_OPTIONS",
        "PERL5OPT",
        "PERL5LIB",
        "RUBYOPT",
        "RUBYLIB",
        "LESSOPEN",
        "LESSCLOSE",
        "CC",
        "CXX",
        "RUSTC",
        "MAKEFLAGS",
        "SHELL",
        "BROWSER",
        "CDPATH",
        "GLOBIGNORE",
        "BASH_FUNC",
        "HOME",
    ];
    EXACT.contains(&name)
        || name.starts_with("LD_")
        || name.starts_with("GIT_")
        || name.starts_with("PYTHON")
        || name.starts_with("BASH_FUNC_")
        || name.ends_with("_COMMAND")
        || name.contains("PAGER")
        || name.contains("EDITOR")
        || name.contains("WRAPPER")
        || name.contains("RUNNER")
        || name.contains("PRELOAD")
}

/// Classifies one command (program + arguments) into `ctx`.
pub(crate) fn classify(ctx: &mut Ctx<'_>, mut argv: Vec<Arg>) {
    if argv.is_empty() {
        return;
    }
    let first = argv.remove(0);
    let args = argv;
    let (given, literal) = match first {
        Arg::Lit(s) => (s, true),
        Arg::One(s) | Arg::Many(s) => (s, false),
    };
    if !literal {
        ctx.unknown(
            &given,
            "variable, glob or substitution in command position",
            false,
        );
        return;
    }
    if ctx.depth > MAX_DEPTH {
        ctx.unknown(&given, "commands nested too deeply", false);
        return;
    }
    let prog = resolve(&given);
    let Prog::Name(name) = &prog else {
        push(
            ctx,
            prog,
            given,
            args,
            Some(("runs a program the policy cannot see", true)),
        );
        return;
    };
    let n = name.as_str();
    if EVALUATORS.contains(&n) {
        push(
            ctx,
            prog,
            given,
            args,
            Some(("evaluates code the policy cannot see", false)),
        );
    } else if SPAWNERS.contains(&n) {
        // A rule that names the whole command line explicitly may still allow it.
        let why = "runs another command in a way the policy does not unwrap";
        push(ctx, prog, given, args, Some((why, true)));
    } else if SHELLS.contains(&n) {
        shell(ctx, prog, given, args);
    } else if is_interpreter(ctx.interpreters, n) {
        push(
            ctx,
            prog,
            given,
            args,
            Some(("runs a script the policy cannot see", true)),
        );
    } else if let Some(inner) = crate::wrappers::unwrap(n, &args) {
        let shown = match &inner {
            Err(_) => format!("{n} …"),
            Ok(_) => String::new(),
        };
        push_transparent(ctx, prog, given, args);
        match inner {
            Ok(inner) => nested(ctx, inner),
            Err(why) => ctx.unknown(&shown, why, false),
        }
    } else if n == "watch" {
        watch(ctx, prog, given, args);
    } else {
        if n == "find" {
            for inner in find_exec(&args) {
                nested(ctx, inner);
            }
        }
        if matches!(n, "cd" | "pushd" | "popd") {
            ctx.cwd = None;
        }
        effects::record(ctx, n, &args);
        push(ctx, prog, given, args, None);
    }
}

fn nested(ctx: &mut Ctx<'_>, argv: Vec<Arg>) {
    ctx.depth += 1;
    classify(ctx, argv);
    ctx.depth -= 1;
}

fn push(ctx: &mut Ctx<'_>, prog: Prog, given: String, args: Vec<Arg>, u: Option<(&str, bool)>) {
    ctx.out.cmds.push(Cmd {
        prog,
        given,
        args,
        unknown: u.map(|(reason, overridable)| Unknown {
            reason: reason.to_owned(),
            overridable,
        }),
        transparent: false,
    });
}

fn push_transparent(ctx: &mut Ctx<'_>, prog: Prog, given: String, args: Vec<Arg>) {
    ctx.out.cmds.push(Cmd {
        prog,
        given,
        args,
        unknown: None,
        transparent: true,
    });
}

/// The program's name if it is found on `PATH` or in a system directory, else its path.
fn resolve(word: &str) -> Prog {
    if word.is_empty() {
        return Prog::Dynamic;
    }
    match word.rsplit_once('/') {
        None => Prog::Name(word.to_owned()),
        Some((dir, base)) => {
            let dir = if dir.is_empty() { "/" } else { dir };
            let trusted = SYSTEM_DIRS.contains(&dir);
            if trusted && !base.is_empty() && base != "." && base != ".." {
                Prog::Name(base.to_owned())
            } else {
                Prog::Path(word.to_owned())
            }
        }
    }
}

/// Whether `name` is one of `interpreters`, allowing a version suffix (`python3.12`).
fn is_interpreter(interpreters: &[String], name: &str) -> bool {
    // `name` minus `i` must be digits and dots: so `i` is at least `name` without its trailing
    // digits and dots, and at most `name`. Comparing lengths first rules out almost every entry
    // without reading its text.
    let base = name
        .trim_end_matches(|c: char| c.is_ascii_digit() || c == '.')
        .len();
    interpreters
        .iter()
        .any(|i| (base..=name.len()).contains(&i.len()) && name.starts_with(i.as_str()))
}

/// `sh [options] -c SCRIPT [ARG0 ARGS…]`: the script's commands; any other use is unknown.
fn shell(ctx: &mut Ctx<'_>, prog: Prog, given: String, args: Vec<Arg>) {
    let mut has_c = false;
    let mut i = 0;
    let mut bad = None;
    while i < args.len() {
        let Some(a) = args[i].lit() else {
            bad = Some("shell options the policy cannot resolve");
            break;
        };
        if a == "--" || a == "-" {
            i += 1;
            break;
        }
        if a.starts_with("--") {
            if matches!(a, "--rcfile" | "--init-file") || a.starts_with("--rcfile=") {
                bad = Some("shell reads a startup file the policy cannot see");
            }
            i += 1;
            continue;
        }
        if (a.starts_with('-') || a.starts_with('+')) && a.len() > 1 {
            let flags = &a[1..];
            if flags.contains('c') {
                has_c = true;
            }
            if flags.contains('s') || flags.contains('i') {
                bad = Some("shell reads commands the policy cannot see");
            }
            // -o OPTION / -O SHOPT take a value.
            i += if flags.ends_with('o') || flags.ends_with('O') {
                2
            } else {
                1
            };
            continue;
        }
        break;
    }
    let script = args.get(i).cloned();
    if let Some(why) = bad {
        push_transparent(ctx, prog, given.clone(), args);
        ctx.unknown(&given, why, false);
        return;
    }
    match (has_c, script) {
        (true, Some(Arg::Lit(text))) => {
            let zsh = given.ends_with("zsh");
            push_transparent(ctx, prog, given, args);
            ctx.depth += 1;
            script::classify(ctx, &text, zsh);
            ctx.depth -= 1;
        }
        (true, Some(other)) => {
            let shown = other.shown().to_owned();
            push_transparent(ctx, prog, given, args);
            ctx.unknown(&shown, "a script the policy cannot resolve", false);
        }
        (true, None) => {
            push(
                ctx,
                prog,
                given,
                args,
                Some(("shell -c without a script", false)),
            );
        }
        (false, Some(_)) => {
            let why = "runs a script the policy cannot see";
            push(ctx, prog, given, args, Some((why, true)));
        }
        (false, None) => {
            let why = "shell reads commands the policy cannot see";
            push(ctx, prog, given, args, Some((why, false)));
        }
    }
}

/// `watch [options] WORDS…` runs `sh -c "WORDS…"`.
fn watch(ctx: &mut Ctx<'_>, prog: Prog, given: String, args: Vec<Arg>) {
    let mut i = 0;
    while let Some(Arg::Lit(a)) = args.get(i) {
        if !a.starts_with('-') {
            break;
        }
        i += if matches!(a.as_str(), "-n" | "--interval" | "-q" | "--equexit") {
            2
        } else {
            1
        };
    }
    let words: Option<Vec<&str>> = args
        .get(i..)
        .unwrap_or_default()
        .iter()
        .map(Arg::lit)
        .collect();
    push_transparent(ctx, prog, given.clone(), args.clone());
    match words {
        Some(w) if !w.is_empty() => {
            ctx.depth += 1;
            script::classify(ctx, &w.join(" "), false);
            ctx.depth -= 1;
        }
        _ => ctx.unknown(&given, "a command the policy cannot resolve", false),
    }
}

/// The commands of `find … -exec CMD {} ;` (also `-execdir`, `-ok`, `-okdir`, `+`).
fn find_exec(args: &[Arg]) -> Vec<Vec<Arg>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        if matches!(args[i].lit(), Some("-exec" | "-execdir" | "-ok" | "-okdir")) {
            let mut cmd = Vec::new();
            i += 1;
            while i < args.len() && !matches!(args[i].lit(), Some(";" | "+")) {
                cmd.push(match &args[i] {
                    Arg::Lit(s) if s.contains("{}") => Arg::One(s.clone()),
                    a => a.clone(),
                });
                i += 1;
            }
            out.push(cmd);
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_in_system_directories_go_by_name_others_by_path() {
        assert_eq!(resolve("rm"), Prog::Name("rm".into()));
        assert_eq!(resolve("/usr/bin/rm"), Prog::Name("rm".into()));
        assert_eq!(resolve("/bin/rm"), Prog::Name("rm".into()));
        assert_eq!(resolve("/tmp/rm"), Prog::Path("/tmp/rm".into()));
        assert_eq!(resolve("./rm"), Prog::Path("./rm".into()));
        assert_eq!(resolve("x/ls"), Prog::Path("x/ls".into()));
        assert_eq!(
            resolve("/usr/bin/../../tmp/ls"),
            Prog::Path("/usr/bin/../../tmp/ls".into())
        );
    }

    /// The length-first check above against the plain definition.
    fn is_interpreter_slow(interpreters: &[String], name: &str) -> bool {
        interpreters.iter().any(|i| {
            name.strip_prefix(i.as_str())
                .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit() || c == '.'))
        })
    }

    proptest::proptest! {
        #[test]
        fn interpreter_check_is_the_plain_definition(
            list in proptest::collection::vec("[a-c0-9.]{0,4}", 0..6),
            name in "[a-c0-9.é]{0,6}",
        ) {
            proptest::prop_assert_eq!(
                is_interpreter(&list, &name),
                is_interpreter_slow(&list, &name)
            );
        }
    }

    #[test]
    fn interpreters_match_with_version_suffixes() {
        let i = vec!["python".to_owned(), "node".to_owned()];
        assert!(is_interpreter(&i, "python3.12"));
        assert!(is_interpreter(&i, "node"));
        assert!(!is_interpreter(&i, "nodemon"));
    }
}
