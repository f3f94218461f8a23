//! Shell scripts (`sh -c SCRIPT`) parsed with `brush-parser` into their simple commands — through
//! lists, pipelines, subshells, groups, `if`/`while`/`until`/`for`/`case`, function bodies,
//! command and process substitutions and here-documents — each classified by
//! [`exec`](crate::exec); redirections that write become writes.
//!
//! Arithmetic (`$(( ))`, `(( ))`, `[[ a -eq b ]]`) evaluates the *value* of the variables it
//! names as code in bash (`x='a[$(cmd)]'; (( x ))` runs `cmd`), so a script that does arithmetic
//! on a variable it set from something the policy cannot see (or to a literal holding `$(` or a
//! backtick) is unknown.

use std::collections::HashSet;

use brush_parser::ast::{self, CommandPrefixOrSuffixItem as Item};
use brush_parser::word::{WordPiece, WordPieceWithSource};
use brush_parser::{ParserImpl, ParserOptions, ast::IoFileRedirectKind as Kind};

use crate::classify::Ctx;
use crate::exec::{self, dangerous_var};
use crate::pattern::Arg;

/// Classifies the commands of `text` into `ctx`. A script that does not parse is unknown.
pub(crate) fn classify(ctx: &mut Ctx<'_>, text: &str, zsh: bool) {
    let mut w = Walker {
        zsh,
        arith_names: HashSet::new(),
        tainted: HashSet::new(),
        code_literal: false,
    };
    w.script(ctx, text);
    if w.code_literal && !w.arith_names.is_empty() {
        ctx.unknown(
            text,
            "arithmetic next to a literal that holds a command substitution",
            false,
        );
    } else if let Some(n) = w.arith_names.intersection(&w.tainted).next() {
        let shown = format!("$(( {n} ))");
        ctx.unknown(
            &shown,
            "arithmetic on a variable the policy cannot see",
            false,
        );
    }
}

/// brush-parser's defaults except extglob: `sh -c` scripts are POSIX sh or bash; extglob off
/// keeps `!(x)` a syntax error rather than a pattern we would have to expand. A constant, so
/// deciding does not build it again for every script and word.
const OPTIONS: ParserOptions = ParserOptions {
    enable_extended_globbing: false,
    posix_mode: false,
    sh_mode: false,
    tilde_expansion_at_word_start: true,
    tilde_expansion_after_colon: false,
    parser_impl: ParserImpl::Peg,
};

struct Walker {
    zsh: bool,
    /// Names used in arithmetic.
    arith_names: HashSet<String>,
    /// Variables given a value the policy cannot see.
    tainted: HashSet<String>,
    /// A literal word holds `$(` or a backtick.
    code_literal: bool,
}

impl Walker {
    fn script(&mut self, ctx: &mut Ctx<'_>, text: &str) {
        if ctx.depth > crate::classify::MAX_DEPTH {
            ctx.unknown(text, "commands nested too deeply", false);
            return;
        }
        let mut parser = brush_parser::Parser::new(std::io::Cursor::new(text), &OPTIONS);
        match parser.parse_program() {
            Ok(program) => {
                ctx.depth += 1;
                for list in &program.complete_commands {
                    self.list(ctx, list);
                }
                ctx.depth -= 1;
            }
            Err(e) => {
                tracing::debug!(error = %e, "script does not parse");
                ctx.unknown(text, "cannot parse the script", false);
            }
        }
    }

    fn list(&mut self, ctx: &mut Ctx<'_>, list: &ast::CompoundList) {
        for ast::CompoundListItem(and_or, _) in &list.0 {
            self.pipeline(ctx, &and_or.first);
            for next in &and_or.additional {
                match next {
                    ast::AndOr::And(p) | ast::AndOr::Or(p) => self.pipeline(ctx, p),
                }
            }
        }
    }

    fn pipeline(&mut self, ctx: &mut Ctx<'_>, p: &ast::Pipeline) {
        for cmd in &p.seq {
            self.command(ctx, cmd);
        }
    }

    fn command(&mut self, ctx: &mut Ctx<'_>, cmd: &ast::Command) {
        match cmd {
            ast::Command::Simple(s) => self.simple(ctx, s),
            ast::Command::Compound(c, redirects) => {
                self.compound(ctx, c);
                self.redirects(ctx, redirects.as_ref());
            }
            ast::Command::Function(f) => {
                self.compound(ctx, &f.body.0);
                self.redirects(ctx, f.body.1.as_ref());
            }
            ast::Command::ExtendedTest(t, redirects) => {
                self.test(ctx, &t.expr);
                self.redirects(ctx, redirects.as_ref());
            }
        }
    }

    fn compound(&mut self, ctx: &mut Ctx<'_>, c: &ast::CompoundCommand) {
        use ast::CompoundCommand as C;
        match c {
            C::Arithmetic(a) => self.arith(ctx, &a.expr.value),
            C::ArithmeticForClause(f) => {
                for e in [&f.initializer, &f.condition, &f.updater]
                    .into_iter()
                    .flatten()
                {
                    self.arith(ctx, &e.value);
                }
                self.list(ctx, &f.body.list);
            }
            C::BraceGroup(b) => self.list(ctx, &b.list),
            C::Subshell(s) => self.list(ctx, &s.list),
            C::ForClause(f) => {
                let mut dynamic = false;
                for w in f.values.iter().flatten() {
                    dynamic |= !matches!(self.word(ctx, w), Arg::Lit(_));
                }
                if dynamic {
                    self.tainted.insert(f.variable_name.clone());
                }
                if dangerous_var(&f.variable_name) {
                    ctx.unknown(
                        &f.variable_name,
                        "sets a variable that changes which program runs",
                        false,
                    );
                }
                self.list(ctx, &f.body.list);
            }
            C::CaseClause(c) => {
                self.word(ctx, &c.value);
                for item in &c.cases {
                    for p in &item.patterns {
                        self.word(ctx, p);
                    }
                    if let Some(l) = &item.cmd {
                        self.list(ctx, l);
                    }
                }
            }
            C::IfClause(i) => {
                self.list(ctx, &i.condition);
                self.list(ctx, &i.then);
                for e in i.elses.iter().flatten() {
                    if let Some(c) = &e.condition {
                        self.list(ctx, c);
                    }
                    self.list(ctx, &e.body);
                }
            }
            C::WhileClause(w) | C::UntilClause(w) => {
                self.list(ctx, &w.0);
                self.list(ctx, &w.1.list);
            }
            C::Coprocess(c) => self.command(ctx, &c.body),
        }
    }

    fn test(&mut self, ctx: &mut Ctx<'_>, e: &ast::ExtendedTestExpr) {
        use ast::ExtendedTestExpr as T;
        match e {
            T::And(a, b) | T::Or(a, b) => {
                self.test(ctx, a);
                self.test(ctx, b);
            }
            T::Not(a) | T::Parenthesized(a) => self.test(ctx, a),
            T::UnaryTest(_, w) => {
                self.word(ctx, w);
            }
            T::BinaryTest(op, a, b) => {
                use ast::BinaryPredicate as P;
                self.word(ctx, a);
                self.word(ctx, b);
                if matches!(
                    op,
                    P::ArithmeticEqualTo
                        | P::ArithmeticNotEqualTo
                        | P::ArithmeticLessThan
                        | P::ArithmeticLessThanOrEqualTo
                        | P::ArithmeticGreaterThan
                        | P::ArithmeticGreaterThanOrEqualTo
                ) {
                    self.arith(ctx, &a.value);
                    self.arith(ctx, &b.value);
                }
            }
        }
    }

    /// Notes the names an arithmetic expression uses; a substitution inside it is classified.
    fn arith(&mut self, ctx: &mut Ctx<'_>, expr: &str) {
        let mut name = String::new();
        for c in expr.chars().chain(std::iter::once(' ')) {
            if c.is_ascii_alphanumeric() || c == '_' {
                name.push(c);
            } else {
                if name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
                    self.arith_names.insert(std::mem::take(&mut name));
                }
                name.clear();
            }
        }
        if expr.contains("$(") || expr.contains('`') {
            // Classify the substitutions by parsing the expression as a word.
            let _ = self.word_text(ctx, expr, true);
        }
    }

    fn simple(&mut self, ctx: &mut Ctx<'_>, sc: &ast::SimpleCommand) {
        let prefix = sc.prefix.iter().flat_map(|p| p.0.iter());
        let suffix = sc.suffix.iter().flat_map(|s| s.0.iter());
        let n = sc.prefix.as_ref().map_or(0, |p| p.0.len())
            + sc.suffix.as_ref().map_or(0, |s| s.0.len())
            + 1;
        let mut argv = Vec::with_capacity(n);
        // Words in order (prefix, program, suffix), then the redirections in order.
        for item in prefix.clone() {
            self.item(ctx, item, false, &mut argv);
        }
        if let Some(w) = &sc.word_or_name {
            argv.push(self.word(ctx, w));
        }
        for item in suffix.clone() {
            self.item(ctx, item, true, &mut argv);
        }
        for item in prefix.chain(suffix) {
            if let Item::IoRedirect(r) = item {
                self.redirect(ctx, r);
            }
        }
        self.declarations(ctx, &argv);
        exec::classify(ctx, argv);
    }

    /// One word of a simple command (a redirection is handled after all of them); `suffix`: it
    /// comes after the program.
    fn item(&mut self, ctx: &mut Ctx<'_>, item: &Item, suffix: bool, argv: &mut Vec<Arg>) {
        match item {
            Item::IoRedirect(_) => {}
            Item::Word(w) => argv.push(self.word(ctx, w)),
            Item::AssignmentWord(a, w) => {
                let value = self.assignment(ctx, a);
                if suffix {
                    // An argument of `export`/`declare`/… that looks like an assignment.
                    argv.push(match value {
                        Arg::Lit(_) => self.word(ctx, w),
                        _ => Arg::One(w.value.clone()),
                    });
                }
            }
            Item::ProcessSubstitution(_, sub) => {
                self.list(ctx, &sub.list);
                argv.push(Arg::One("<(…)".into()));
            }
        }
    }

    /// `read X`, `printf -v X`, `export X=…`: variables that builtins set.
    fn declarations(&mut self, ctx: &mut Ctx<'_>, argv: &[Arg]) {
        let Some(prog) = argv.first().and_then(Arg::lit) else {
            return;
        };
        let setter = matches!(
            prog,
            "read" | "printf" | "getopts" | "export" | "declare" | "typeset" | "local" | "readonly"
        );
        if !setter {
            return;
        }
        for a in &argv[1..] {
            let (name, dynamic) = match a {
                Arg::Lit(s) => (
                    s.split('=').next().unwrap_or(s).to_owned(),
                    prog == "read" || prog == "printf",
                ),
                Arg::One(s) | Arg::Many(s) => (s.split('=').next().unwrap_or(s).to_owned(), true),
            };
            if dangerous_var(&name) {
                ctx.unknown(
                    a.shown(),
                    "sets a variable that changes which program runs",
                    false,
                );
            }
            if dynamic {
                self.tainted.insert(name);
            }
        }
    }

    fn assignment(&mut self, ctx: &mut Ctx<'_>, a: &ast::Assignment) -> Arg {
        let name = match &a.name {
            ast::AssignmentName::VariableName(n) | ast::AssignmentName::ArrayElementName(n, _) => n,
        };
        if dangerous_var(name) {
            ctx.unknown(
                &format!("{name}=…"),
                "sets a variable that changes which program runs",
                false,
            );
        }
        let value = match &a.value {
            ast::AssignmentValue::Scalar(w) => self.word(ctx, w),
            ast::AssignmentValue::Array(items) => {
                let mut all = Arg::Lit(String::new());
                for (k, v) in items {
                    if let Some(k) = k {
                        self.word(ctx, k);
                    }
                    if !matches!(self.word(ctx, v), Arg::Lit(_)) {
                        all = Arg::Many(String::new());
                    }
                }
                all
            }
        };
        if !matches!(value, Arg::Lit(_)) {
            self.tainted.insert(name.clone());
        }
        value
    }

    fn redirects(&mut self, ctx: &mut Ctx<'_>, list: Option<&ast::RedirectList>) {
        for r in list.iter().flat_map(|l| l.0.iter()) {
            self.redirect(ctx, r);
        }
    }

    fn redirect(&mut self, ctx: &mut Ctx<'_>, r: &ast::IoRedirect) {
        use ast::IoFileRedirectTarget as T;
        match r {
            ast::IoRedirect::File(_, kind, target) => match target {
                T::Filename(w) => {
                    let a = self.word(ctx, w);
                    if matches!(
                        kind,
                        Kind::Write | Kind::Append | Kind::ReadAndWrite | Kind::Clobber
                    ) {
                        ctx.effect(&a, false);
                    }
                }
                T::Fd(_) => {}
                T::ProcessSubstitution(_, sub) => self.list(ctx, &sub.list),
                T::Duplicate(w) => {
                    let a = self.word(ctx, w);
                    let fd = a.lit().is_some_and(|s| {
                        let s = s.strip_suffix('-').unwrap_or(s);
                        s.chars().all(|c| c.is_ascii_digit())
                    });
                    if matches!(kind, Kind::DuplicateOutput) && !fd {
                        ctx.effect(&a, false);
                    }
                }
            },
            ast::IoRedirect::HereDocument(_, doc) => {
                if doc.requires_expansion {
                    match brush_parser::word::parse_heredoc(&doc.doc.value, &OPTIONS) {
                        Ok(pieces) => {
                            let mut out = Expansion::default();
                            self.pieces(ctx, &doc.doc.value, &pieces, true, &mut out);
                        }
                        Err(_) => {
                            ctx.unknown(&doc.doc.value, "cannot parse the here-document", false)
                        }
                    }
                }
            }
            ast::IoRedirect::HereString(_, w) => {
                self.word(ctx, w);
            }
            ast::IoRedirect::OutputAndError(w, _) => {
                let a = self.word(ctx, w);
                ctx.effect(&a, false);
            }
        }
    }

    fn word(&mut self, ctx: &mut Ctx<'_>, w: &ast::Word) -> Arg {
        self.word_text(ctx, &w.value, false)
    }

    /// Quote removal of one word; substitutions inside it are classified.
    fn word_text(&mut self, ctx: &mut Ctx<'_>, raw: &str, quoted: bool) -> Arg {
        if self.zsh && raw.contains('(') {
            ctx.unknown(raw, "a zsh glob qualifier may run code", false);
            return Arg::Many(raw.to_owned());
        }
        // Fast path: a word with nothing to expand or unquote is itself (proven against
        // brush-parser's word parser in the tests below).
        if fast_path() && plain(raw) {
            return Arg::Lit(raw.to_owned());
        }
        self.parsed_word(ctx, raw, quoted)
    }

    /// [`word_text`](Self::word_text) through brush-parser's word parser, without the fast path.
    fn parsed_word(&mut self, ctx: &mut Ctx<'_>, raw: &str, quoted: bool) -> Arg {
        let pieces = match brush_parser::word::parse(raw, &OPTIONS) {
            Ok(p) => p,
            Err(_) => {
                ctx.unknown(raw, "cannot parse a word of the script", false);
                return Arg::Many(raw.to_owned());
            }
        };
        let mut out = Expansion::default();
        self.pieces(ctx, raw, &pieces, quoted, &mut out);
        match (out.many, out.one) {
            (false, false) => Arg::Lit(out.text),
            (true, _) => Arg::Many(raw.to_owned()),
            (false, true) => Arg::One(raw.to_owned()),
        }
    }

    fn pieces(
        &mut self,
        ctx: &mut Ctx<'_>,
        raw: &str,
        pieces: &[WordPieceWithSource],
        quoted: bool,
        out: &mut Expansion,
    ) {
        for p in pieces {
            let dynamic = |out: &mut Expansion| {
                if quoted {
                    out.one = true;
                } else {
                    out.many = true;
                }
            };
            match &p.piece {
                WordPiece::Text(t) => {
                    if !quoted && has_glob(t) {
                        out.many = true;
                    }
                    out.text.push_str(t);
                }
                WordPiece::SingleQuotedText(t) => {
                    self.code_literal |= t.contains("$(") || t.contains('`');
                    out.text.push_str(t);
                }
                WordPiece::AnsiCQuotedText(t) => {
                    if t.contains('\\') {
                        out.one = true;
                    }
                    self.code_literal |= t.contains("$(") || t.contains('`');
                    out.text.push_str(t);
                }
                WordPiece::DoubleQuotedSequence(inner)
                | WordPiece::GettextDoubleQuotedSequence(inner) => {
                    self.pieces(ctx, raw, inner, true, out);
                }
                WordPiece::TildeExpansion(_) => out.one = true,
                WordPiece::ParameterExpansion(_) => {
                    let src = raw.get(p.start_index..p.end_index).unwrap_or(raw);
                    if ["$(", "`", "<(", ">("].iter().any(|s| src.contains(s)) {
                        ctx.unknown(src, "a substitution inside a parameter expansion", false);
                    }
                    dynamic(out);
                }
                WordPiece::CommandSubstitution(s) | WordPiece::BackquotedCommandSubstitution(s) => {
                    self.script(ctx, s);
                    dynamic(out);
                }
                WordPiece::EscapeSequence(e) => {
                    let rest = e.strip_prefix('\\').unwrap_or(e);
                    if quoted && !rest.starts_with(['$', '`', '"', '\\', '\n']) {
                        out.text.push_str(e);
                    } else if rest != "\n" {
                        out.text.push_str(rest);
                    }
                }
                WordPiece::ArithmeticExpression(e) => {
                    self.arith(ctx, &e.value);
                    out.one = true;
                }
            }
        }
    }
}

/// The result of quote removal: the literal text, and whether parts of it are not known.
#[derive(Default)]
struct Expansion {
    text: String,
    /// Part of it is one word the policy cannot see.
    one: bool,
    /// It may become several words (or none).
    many: bool,
}

#[cfg(test)]
thread_local! {
    /// Set by tests to compare decisions with and without the plain-word fast path.
    static SLOW: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the plain-word fast path is on (always, except in tests that compare without it).
fn fast_path() -> bool {
    #[cfg(test)]
    if SLOW.with(std::cell::Cell::get) {
        return false;
    }
    true
}

/// A word with no byte that quotes, expands, globs or escapes: its value is its text.
fn plain(raw: &str) -> bool {
    !raw.is_empty() && !raw.bytes().any(special)
}

/// Whether a byte of a word may start a quote, an expansion, a pattern or an escape: a word
/// without any is itself. (These are ASCII: no byte of a multi-byte UTF-8 character is one.)
fn special(b: u8) -> bool {
    matches!(
        b,
        b'$' | b'`' | b'\'' | b'"' | b'\\' | b'~' | b'*' | b'?' | b'[' | b'{' | b'('
    )
}

/// Whether unquoted text would be expanded by pathname or brace expansion.
fn has_glob(t: &str) -> bool {
    if t.contains(['*', '?', '[']) {
        return true;
    }
    match (t.find('{'), t.rfind('}')) {
        (Some(a), Some(b)) if a < b => {
            let inner = &t[a..b];
            inner.contains(',') || inner.contains("..")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;
    use crate::classify::Ctx;

    fn walker() -> Walker {
        Walker {
            zsh: false,
            arith_names: HashSet::new(),
            tainted: HashSet::new(),
            code_literal: false,
        }
    }

    /// Words mixing plain text with every byte the fast path looks for, and other text.
    fn word() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                "[a-zA-Z0-9_./=:,@%+-]{1,4}",
                Just("é".to_owned()),
                Just("#".to_owned()),
                Just("!".to_owned()),
                Just("^".to_owned()),
                Just("}".to_owned()),
                Just("]".to_owned()),
                Just(")".to_owned()),
                "[$`'\"\\~*?\\[{(]",
            ],
            1..6,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The plain-word fast path gives what brush-parser's word parser gives, quoted or not.
        #[test]
        fn plain_words_are_what_the_word_parser_says(raw in word(), quoted in any::<bool>()) {
            prop_assume!(plain(&raw));
            let interpreters = Vec::new();
            let (mut fast_ctx, mut slow_ctx) = (
                Ctx::new("/workspace", None, &interpreters),
                Ctx::new("/workspace", None, &interpreters),
            );
            let (mut fast, mut slow) = (walker(), walker());
            let a = fast.word_text(&mut fast_ctx, &raw, quoted);
            let b = slow.parsed_word(&mut slow_ctx, &raw, quoted);
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(a, Arg::Lit(raw.clone()));
            prop_assert!(fast_ctx.out.cmds.is_empty() && slow_ctx.out.cmds.is_empty());
            prop_assert_eq!(fast.code_literal, slow.code_literal);
            prop_assert_eq!(&fast.arith_names, &slow.arith_names);
        }

        /// Whole scripts of plain and special words decide as they did word by word through the
        /// word parser.
        #[test]
        fn scripts_decide_the_same_with_and_without_the_fast_path(
            words in prop::collection::vec(word(), 1..8),
        ) {
            let script = words.join(" ");
            let interpreters = Vec::new();
            let mut ctx = Ctx::new("/workspace", None, &interpreters);
            classify(&mut ctx, &script, false);
            let mut slow_ctx = Ctx::new("/workspace", None, &interpreters);
            SLOW.with(|s| s.set(true));
            classify(&mut slow_ctx, &script, false);
            SLOW.with(|s| s.set(false));
            prop_assert_eq!(format!("{:?}", ctx.out), format!("{:?}", slow_ctx.out));
        }
    }

    #[test]
    fn parser_options_are_the_defaults_without_extglob() {
        let want = ParserOptions {
            enable_extended_globbing: false,
            ..ParserOptions::default()
        };
        assert!(OPTIONS == want);
    }
}
