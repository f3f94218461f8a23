//! Argument patterns for `exec` and `program` rules, and matching them against a command's words.
//!
//! A pattern is a list of elements, one per word: the first names the program, the rest match
//! its arguments. An element is `*` (exactly one word), `**` (any number of words, anywhere in
//! the list), `re:REGEX` (one word matching the whole regular expression), or alternatives
//! separated by `|`, each a literal or a shell-style glob (`-*r*`, `*.lock`, `[0-9]*`).
//!
//! A word the policy cannot resolve (a variable, a glob, a substitution) can only *maybe* match
//! a literal or glob element: [`Fit::Maybe`]. A deny rule that maybe matches asks; an allow rule
//! must match surely.

use globset::{GlobBuilder, GlobMatcher};
use regex::Regex;

/// How well a pattern fits. Ordered: `No < Maybe < Sure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Fit {
    No,
    Maybe,
    Sure,
}

/// One word of a command as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Arg {
    /// A word whose value is known.
    Lit(String),
    /// Exactly one word whose value is not known (a quoted `"$X"`, `~`, `$(…)` in quotes).
    One(String),
    /// Any number of words, values not known (an unquoted `$X`, a glob, `{a,b}`, xargs' input).
    Many(String),
}

impl Arg {
    /// The word as the person should see it.
    pub(crate) fn shown(&self) -> &str {
        match self {
            Arg::Lit(s) | Arg::One(s) | Arg::Many(s) => s,
        }
    }

    /// The word as the person should see it, owned.
    pub(crate) fn into_shown(self) -> String {
        match self {
            Arg::Lit(s) | Arg::One(s) | Arg::Many(s) => s,
        }
    }

    pub(crate) fn lit(&self) -> Option<&str> {
        match self {
            Arg::Lit(s) => Some(s),
            _ => None,
        }
    }
}

/// One alternative of an element.
#[derive(Debug, Clone)]
pub(crate) enum Atom {
    Lit(String),
    Glob(GlobMatcher),
    Re(Regex),
}

impl Atom {
    fn parse(s: &str) -> Result<Self, String> {
        if let Some(re) = s.strip_prefix("re:") {
            return Regex::new(&format!("^(?:{re})$"))
                .map(Atom::Re)
                .map_err(|e| format!("invalid regular expression `{re}`: {e}"));
        }
        if s.is_empty() {
            return Err("empty alternative".into());
        }
        // `[` alone is the test command, not a character class.
        if s != "[" && s.contains(['*', '?', '[', '{']) {
            return GlobBuilder::new(s)
                .literal_separator(false)
                .backslash_escape(true)
                .build()
                .map(|g| Atom::Glob(g.compile_matcher()))
                .map_err(|e| format!("invalid glob `{s}`: {e}"));
        }
        Ok(Atom::Lit(s.to_owned()))
    }

    pub(crate) fn is_match(&self, word: &str) -> bool {
        match self {
            Atom::Lit(l) => l == word,
            Atom::Glob(g) => g.is_match(word),
            Atom::Re(r) => r.is_match(word),
        }
    }

    pub(crate) fn literal(&self) -> Option<&str> {
        match self {
            Atom::Lit(l) => Some(l),
            _ => None,
        }
    }
}

/// One element of a pattern.
#[derive(Debug, Clone)]
pub(crate) enum Elem {
    /// `*`: exactly one word.
    One,
    /// `**`: any number of words.
    Rest,
    /// Alternatives.
    Alts(Vec<Atom>),
}

impl Elem {
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        match s {
            "*" => Ok(Elem::One),
            "**" => Ok(Elem::Rest),
            _ if s.starts_with("re:") => Ok(Elem::Alts(vec![Atom::parse(s)?])),
            _ => s
                .split('|')
                .map(Atom::parse)
                .collect::<Result<Vec<_>, _>>()
                .map(Elem::Alts),
        }
    }

    /// How this element fits one word (not [`Arg::Many`]).
    fn fit(&self, arg: &Arg) -> Fit {
        match (self, arg) {
            (Elem::One | Elem::Rest, _) => Fit::Sure,
            (Elem::Alts(alts), Arg::Lit(w)) => {
                if alts.iter().any(|a| a.is_match(w)) {
                    Fit::Sure
                } else {
                    Fit::No
                }
            }
            (Elem::Alts(_), _) => Fit::Maybe,
        }
    }
}

/// The canonical text of a pattern element list: equal for patterns that match the same words
/// (alternatives sorted), used to find contradicting rules.
pub(crate) fn canonical(elems: &[String]) -> String {
    elems
        .iter()
        .map(|e| {
            if e.starts_with("re:") {
                return e.clone();
            }
            let mut alts: Vec<&str> = e.split('|').collect();
            alts.sort_unstable();
            alts.dedup();
            alts.join("|")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// How well `pats` fits `args` (both without the program), as a whole.
pub(crate) fn fit_args(pats: &[Elem], args: &[Arg]) -> Fit {
    let (n, m) = (pats.len(), args.len());
    let w = m + 1;
    // The table lives on the stack for the usual small pattern and command.
    let mut small = [Fit::No; 64];
    let mut large = Vec::new();
    let dp: &mut [Fit] = if (n + 1) * w <= small.len() {
        &mut small[..(n + 1) * w]
    } else {
        large.resize((n + 1) * w, Fit::No);
        &mut large
    };
    dp[n * w + m] = Fit::Sure;
    for i in (0..=n).rev() {
        for j in (0..=m).rev() {
            if i == n && j == m {
                continue;
            }
            let mut best = Fit::No;
            if i < n && matches!(pats[i], Elem::Rest) {
                best = best.max(dp[(i + 1) * w + j]);
                if j < m {
                    best = best.max(dp[i * w + j + 1]);
                }
            } else if j < m {
                match &args[j] {
                    Arg::Many(_) => {
                        // Expands to nothing…
                        best = best.max(dp[i * w + j + 1].min(Fit::Maybe));
                        if i < n {
                            let f = pats[i].fit(&Arg::One(String::new())).min(Fit::Maybe);
                            // …or to one word matching pats[i] and more after it, or to one last.
                            best = best.max(f.min(dp[(i + 1) * w + j]));
                            best = best.max(f.min(dp[(i + 1) * w + j + 1]));
                        }
                    }
                    a => {
                        if i < n {
                            best = best.max(pats[i].fit(a).min(dp[(i + 1) * w + j + 1]));
                        }
                    }
                }
            }
            dp[i * w + j] = best;
        }
    }
    dp[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pats(p: &[&str]) -> Vec<Elem> {
        p.iter().map(|s| Elem::parse(s).unwrap()).collect()
    }
    fn lits(a: &[&str]) -> Vec<Arg> {
        a.iter().map(|s| Arg::Lit((*s).into())).collect()
    }

    #[test]
    fn rest_matches_anywhere_and_alternatives_and_globs_match_one_word() {
        let p = pats(&["**", "-r|-rf|re:-[a-z]*R[a-z]*", "**"]);
        assert_eq!(fit_args(&p, &lits(&["x", "-rf", "y"])), Fit::Sure);
        assert_eq!(fit_args(&p, &lits(&["x", "-fR"])), Fit::Sure);
        assert_eq!(fit_args(&p, &lits(&["x", "-f"])), Fit::No);
        let p = pats(&["*.lock"]);
        assert_eq!(fit_args(&p, &lits(&["Cargo.lock"])), Fit::Sure);
        assert_eq!(fit_args(&p, &lits(&["Cargo.lock", "x"])), Fit::No);
        assert_eq!(fit_args(&pats(&["*"]), &lits(&[])), Fit::No);
    }

    #[test]
    fn unknown_words_maybe_match_literals_and_surely_match_wildcards() {
        let p = pats(&["-rf", "**"]);
        assert_eq!(fit_args(&p, &[Arg::Many("*".into())]), Fit::Maybe);
        assert_eq!(fit_args(&p, &[Arg::One("$X".into())]), Fit::Maybe);
        assert_eq!(
            fit_args(&pats(&["**"]), &[Arg::Many("$X".into())]),
            Fit::Sure
        );
        assert_eq!(fit_args(&pats(&["*"]), &[Arg::One("$X".into())]), Fit::Sure);
        // An unquoted variable may expand to two words: `*` only maybe fits.
        assert_eq!(
            fit_args(&pats(&["*"]), &[Arg::Many("$X".into())]),
            Fit::Maybe
        );
        assert_eq!(fit_args(&pats(&[]), &[Arg::Many("$X".into())]), Fit::Maybe);
    }

    #[test]
    fn long_commands_match_like_short_ones() {
        // More than the 64 cells kept on the stack: the table is on the heap, same answers.
        let p = pats(&["**", "-rf", "**"]);
        let mut words = vec!["x"; 40];
        assert_eq!(fit_args(&p, &lits(&words)), Fit::No);
        words[33] = "-rf";
        assert_eq!(fit_args(&p, &lits(&words)), Fit::Sure);
        words[7] = "$X";
        let mut args = lits(&words);
        args[33] = Arg::Many("$Y".into());
        assert_eq!(fit_args(&p, &args), Fit::Maybe);
    }

    #[test]
    fn invalid_elements_are_errors() {
        assert!(Elem::parse("re:(").is_err());
        assert!(Elem::parse("a||b").is_err());
        assert!(Elem::parse("x[").is_err());
    }
}
