//! Words as a POSIX shell reads them: for command lines shown to a person (a card) or handed to
//! another program to run (a host's `claude mcp add …` line).

/// `s` as one shell word: as it is when it holds only characters no shell treats specially,
/// else single-quoted (a `'` inside written `'\''`).
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@%+,".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// `argv` as one command line, each word quoted as needed.
pub fn join(argv: &[String]) -> String {
    argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_stay_and_others_are_quoted() {
        assert_eq!(quote("ls"), "ls");
        assert_eq!(quote("a/b.c=d"), "a/b.c=d");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("it's $x"), "'it'\\''s $x'");
        assert_eq!(
            join(&["echo".into(), "a b".into(), "*".into()]),
            "echo 'a b' '*'"
        );
    }
}
