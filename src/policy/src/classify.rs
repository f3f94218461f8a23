//! What an action breaks down into: the simple commands a command line runs and the files it
//! writes or deletes, with anything the policy cannot see marked unknown.
//!
//! [`exec`](crate::exec) fills a [`Classified`] from an argv (unwrapping wrappers, expanding
//! `sh -c` through [`script`](crate::script)); [`policy`](crate::policy) decides each part.

use crate::paths;
use crate::pattern::Arg;

/// Scripts nested deeper than this (`sh -c "sh -c '…'"`, `$( $( … ) )`) are unknown.
pub(crate) const MAX_DEPTH: usize = 12;

/// How the program of a command was named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Prog {
    /// By a name found on `PATH`, or a path in a system directory: its basename.
    Name(String),
    /// By any other path (`./x`, `/workspace/x`, `x/y`, `/tmp/x`): as given.
    Path(String),
    /// By a variable, glob or substitution.
    Dynamic,
}

/// Why a command is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unknown {
    pub reason: String,
    /// An allow rule that names this argv explicitly (constrains an argument, or names the
    /// program's path) may still allow it: true for scripts run by an interpreter or by path,
    /// false for code the policy cannot see at all (`eval`, `$X` in command position, …).
    pub overridable: bool,
}

/// One simple command.
#[derive(Debug, Clone)]
pub(crate) struct Cmd {
    pub prog: Prog,
    /// The program word as written (after quote removal where possible).
    pub given: String,
    pub args: Vec<Arg>,
    pub unknown: Option<Unknown>,
    /// A wrapper or shell whose inner command is classified on its own: rules that match it
    /// count, but it does not fall back to the default when none does.
    pub transparent: bool,
}

impl Cmd {
    /// The words as shown to a person.
    pub(crate) fn into_shown(self) -> Vec<String> {
        let mut out = Vec::with_capacity(1 + self.args.len());
        out.push(self.given);
        out.extend(self.args.into_iter().map(Arg::into_shown));
        out
    }
}

/// The target of a write or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// Normalised: relative to the workspace, or absolute when outside it.
    Path(String),
    /// Not a literal path (`$F`, `/dev/tcp/…`, relative after a `cd`): shown as written.
    Unresolved(String),
}

/// A file change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Effect {
    pub delete: bool,
    pub target: Target,
}

/// Everything one action runs and changes.
#[derive(Debug, Default)]
pub(crate) struct Classified {
    pub cmds: Vec<Cmd>,
    pub effects: Vec<Effect>,
}

/// The settings and state of one classification.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    pub workspace: &'a str,
    /// The working directory relative to the workspace (or absolute outside it); `None` after a
    /// `cd` the policy cannot follow.
    pub cwd: Option<String>,
    pub interpreters: &'a [String],
    pub depth: usize,
    pub out: Classified,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(workspace: &'a str, cwd: Option<&str>, interpreters: &'a [String]) -> Self {
        let cwd = paths::normalize(workspace, ".", cwd.unwrap_or("."));
        Ctx {
            workspace,
            cwd: Some(cwd),
            interpreters,
            depth: 0,
            out: Classified::default(),
        }
    }

    /// Records a command the policy cannot see into.
    pub(crate) fn unknown(&mut self, shown: &str, reason: &str, overridable: bool) {
        self.out.cmds.push(Cmd {
            prog: Prog::Dynamic,
            given: shown.to_owned(),
            args: Vec::new(),
            unknown: Some(Unknown {
                reason: reason.to_owned(),
                overridable,
            }),
            transparent: false,
        });
    }

    /// Records a write (`delete` false) or delete of `word`.
    pub(crate) fn effect(&mut self, word: &Arg, delete: bool) {
        let target = match (word, &self.cwd) {
            (Arg::Lit(p), _) if p.starts_with("/dev/") => match p.as_str() {
                "/dev/null" | "/dev/stdout" | "/dev/stderr" | "/dev/tty" => return,
                _ if p.starts_with("/dev/fd/") => return,
                _ => Target::Unresolved(p.clone()),
            },
            (Arg::Lit(p), _) if p.starts_with('/') => {
                Target::Path(paths::normalize(self.workspace, ".", p))
            }
            (Arg::Lit(p), Some(cwd)) if !p.is_empty() => {
                Target::Path(paths::normalize(self.workspace, cwd, p))
            }
            (a, _) => Target::Unresolved(a.shown().to_owned()),
        };
        self.out.effects.push(Effect { delete, target });
    }
}
