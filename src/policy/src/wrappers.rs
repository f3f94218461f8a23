//! Wrappers: programs that run the rest of their arguments as another command (`env`, `nice`,
//! `timeout`, `xargs`, `sudo`, `busybox`, …), and how to find that command.

use crate::exec::dangerous_var;
use crate::pattern::Arg;

/// How one wrapper takes its options.
struct Spec {
    name: &'static str,
    /// Options followed by a value in the next word (`-n 5`), or attached (`-n5`, `--x=5`).
    valued: &'static [&'static str],
    /// Options after which there is no inner command to classify the usual way.
    refuse: &'static [&'static str],
    /// Positional words before the command (`timeout DURATION CMD`).
    positional: usize,
    /// Whether `NAME=VALUE` words may come before the command.
    assignments: bool,
}

const SPECS: &[Spec] = &[
    Spec {
        name: "env",
        valued: &["-u", "--unset", "-C", "--chdir"],
        refuse: &["-S", "--split-string"],
        positional: 0,
        assignments: true,
    },
    Spec {
        name: "nice",
        valued: &["-n", "--adjustment"],
        refuse: &[],
        positional: 0,
        assignments: false,
    },
    Spec {
        name: "nohup",
        valued: &[],
        refuse: &[],
        positional: 0,
        assignments: false,
    },
    Spec {
        name: "timeout",
        valued: &["-s", "--signal", "-k", "--kill-after"],
        refuse: &[],
        positional: 1,
        assignments: false,
    },
    Spec {
        name: "time",
        valued: &["-f", "--format", "-o", "--output"],
        refuse: &[],
        positional: 0,
        assignments: false,
    },
    Spec {
        name: "stdbuf",
        valued: &["-i", "-o", "-e", "--input", "--output", "--error"],
        refuse: &[],
        positional: 0,
        assignments: false,
    },
    Spec {
        name: "ionice",
        valued: &["-c", "--class", "-n", "--classdata"],
        refuse: &["-p", "--pid", "-P", "--pgid", "-u", "--uid"],
        positional: 0,
        assignments: false,
    },
    Spec {
        name: "setsid",
        valued: &[],
        refuse: &[],
        positional: 0,
        assignments: false,
    },
    Spec {
        name: "command",
        valued: &[],
        refuse: &[],
        positional: 0,
        assignments: false,
    },
    Spec {
        name: "exec",
        valued: &["-a"],
        refuse: &[],
        positional: 0,
        assignments: false,
    },
    Spec {
        name: "builtin",
        valued: &[],
        refuse: &[],
        positional: 0,
        assignments: false,
    },
    Spec {
        name: "unbuffer",
        valued: &[],
        refuse: &[],
        positional: 0,
        assignments: false,
    },
    Spec {
        name: "fakeroot",
        valued: &[],
        refuse: &[],
        positional: 0,
        assignments: false,
    },
    Spec {
        name: "catchsegv",
        valued: &[],
        refuse: &[],
        positional: 0,
        assignments: false,
    },
    Spec {
        name: "chroot",
        valued: &["--userspec", "--groups"],
        refuse: &[],
        positional: 1,
        assignments: false,
    },
    Spec {
        name: "taskset",
        valued: &[],
        refuse: &["-p", "--pid"],
        positional: 1,
        assignments: false,
    },
    Spec {
        name: "busybox",
        valued: &[],
        refuse: &[],
        positional: 0,
        assignments: false,
    },
    Spec {
        name: "sudo",
        valued: &[
            "-u",
            "--user",
            "-g",
            "--group",
            "-C",
            "--close-from",
            "-D",
            "--chdir",
            "-h",
            "--host",
            "-p",
            "--prompt",
            "-r",
            "--role",
            "-t",
            "--type",
            "-T",
            "--command-timeout",
            "-U",
            "--other-user",
        ],
        refuse: &[
            "-s", "--shell", "-i", "--login", "-e", "--edit", "-l", "--list", "-v", "-k", "-K",
        ],
        positional: 0,
        assignments: true,
    },
    Spec {
        name: "doas",
        valued: &["-u", "-C"],
        refuse: &["-s"],
        positional: 0,
        assignments: false,
    },
    Spec {
        name: "xargs",
        valued: &[
            "-I",
            "-L",
            "-l",
            "-n",
            "-P",
            "-s",
            "-d",
            "-E",
            "-e",
            "-a",
            "--arg-file",
            "--max-args",
            "--max-procs",
            "--delimiter",
            "--eof",
            "--replace",
            "--max-lines",
            "--max-chars",
            "--process-slot-var",
        ],
        refuse: &[],
        positional: 0,
        assignments: false,
    },
];

/// If `name` is a wrapper: `Ok(inner argv)` (empty when it runs nothing), or `Err(reason)` when
/// the inner command cannot be found. `None` when `name` is no wrapper.
pub(crate) fn unwrap(name: &str, args: &[Arg]) -> Option<Result<Vec<Arg>, &'static str>> {
    let spec = SPECS.iter().find(|s| s.name == name)?;
    Some(inner(spec, args))
}

fn inner(spec: &Spec, args: &[Arg]) -> Result<Vec<Arg>, &'static str> {
    let mut i = 0;
    let mut replace: Option<String> = None;
    // `command -v X` / `-V` only describe X.
    if spec.name == "command" && matches!(args.first().and_then(Arg::lit), Some("-v" | "-V")) {
        return Ok(Vec::new());
    }
    while i < args.len() {
        let Some(a) = args[i].lit() else {
            return Err("wrapper options the policy cannot resolve");
        };
        if a == "--" {
            i += 1;
            break;
        }
        if spec.assignments && is_assignment(a) {
            if a.split_once('=').is_some_and(|(n, _)| dangerous_var(n)) {
                return Err("sets a variable that changes which program runs");
            }
            i += 1;
            continue;
        }
        if !a.starts_with('-') || a == "-" {
            break;
        }
        let (opt, attached) = match a.split_once('=') {
            Some((o, _)) if a.starts_with("--") => (o, true),
            _ => (a, false),
        };
        let short_attached = !a.starts_with("--") && a.len() > 2 && spec.valued.contains(&&a[..2]);
        let cluster_refused = !a.starts_with("--")
            && !short_attached
            && a[1..]
                .chars()
                .any(|c| spec.refuse.iter().any(|r| r.len() == 2 && r.ends_with(c)));
        if spec.refuse.contains(&opt) || cluster_refused {
            return Err("a wrapper mode the policy does not unwrap");
        }
        if spec.name == "xargs" && (opt == "-I" || opt == "-i" || opt == "--replace") {
            replace = Some(match (opt, attached) {
                ("-I", _) => args
                    .get(i + 1)
                    .and_then(Arg::lit)
                    .unwrap_or("{}")
                    .to_owned(),
                _ => a.split_once('=').map_or("{}", |(_, v)| v).to_owned(),
            });
        }
        i += if spec.valued.contains(&opt) && !attached && !short_attached {
            2
        } else {
            1
        };
    }
    i += spec.positional;
    let mut inner: Vec<Arg> = args.get(i..).unwrap_or_default().to_vec();
    if spec.name == "xargs" {
        if inner.is_empty() {
            inner.push(Arg::Lit("echo".into()));
        }
        if let Some(r) = replace {
            for a in inner.iter_mut().skip(1) {
                if let Arg::Lit(s) = a
                    && s.contains(&r)
                {
                    *a = Arg::One(s.clone());
                }
            }
        }
        inner.push(Arg::Many("<xargs input>".into()));
    }
    Ok(inner)
}

/// `NAME=VALUE` with a valid shell name.
pub(crate) fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(n, _)| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lits(a: &[&str]) -> Vec<Arg> {
        a.iter().map(|s| Arg::Lit((*s).into())).collect()
    }
    fn inner_of(name: &str, a: &[&str]) -> Result<Vec<String>, &'static str> {
        unwrap(name, &lits(a))
            .unwrap()
            .map(|v| v.iter().map(|x| x.shown().to_owned()).collect())
    }

    #[test]
    fn wrappers_yield_their_inner_command() {
        assert_eq!(
            inner_of("env", &["-i", "-u", "X", "A=1", "rm", "-rf", "x"]).unwrap(),
            ["rm", "-rf", "x"]
        );
        assert_eq!(
            inner_of("timeout", &["-s", "KILL", "5", "rm", "x"]).unwrap(),
            ["rm", "x"]
        );
        assert_eq!(
            inner_of("timeout", &["--signal=KILL", "5s", "rm"]).unwrap(),
            ["rm"]
        );
        assert_eq!(inner_of("nice", &["-n", "10", "rm"]).unwrap(), ["rm"]);
        assert_eq!(inner_of("nice", &["-n10", "rm"]).unwrap(), ["rm"]);
        assert_eq!(
            inner_of("sudo", &["-u", "root", "--", "rm"]).unwrap(),
            ["rm"]
        );
        assert_eq!(
            inner_of("xargs", &["-0", "-n", "1", "rm", "-rf"]).unwrap(),
            ["rm", "-rf", "<xargs input>"]
        );
        assert_eq!(inner_of("xargs", &[]).unwrap(), ["echo", "<xargs input>"]);
        assert_eq!(
            inner_of("busybox", &["rm", "-rf", "x"]).unwrap(),
            ["rm", "-rf", "x"]
        );
        assert!(inner_of("env", &["PATH=.", "ls"]).is_err());
        assert!(inner_of("env", &["-S", "rm -rf x"]).is_err());
        assert!(inner_of("sudo", &["-s"]).is_err());
        assert!(unwrap("rm", &[]).is_none());
    }
}
