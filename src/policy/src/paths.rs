//! Lexical path normalisation: paths inside the workspace become relative to it, others absolute.

/// Resolves `path` (absolute, or relative to `cwd`, itself relative to the workspace or
/// absolute) against the workspace root `workspace`, removing `.` and `..` lexically. Returns
/// the path relative to the workspace (`.` for the root itself) when it is inside, else the
/// absolute path.
pub(crate) fn normalize(workspace: &str, cwd: &str, path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    if !path.starts_with('/') {
        if !cwd.starts_with('/') {
            push(&mut parts, workspace);
        }
        push(&mut parts, cwd);
    }
    push(&mut parts, path);
    let mut ws: Vec<&str> = Vec::new();
    push(&mut ws, workspace);
    if parts.len() >= ws.len() && parts[..ws.len()] == ws[..] {
        let rest = &parts[ws.len()..];
        if rest.is_empty() {
            ".".to_owned()
        } else {
            rest.join("/")
        }
    } else {
        format!("/{}", parts.join("/"))
    }
}

fn push<'a>(parts: &mut Vec<&'a str>, s: &'a str) {
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn inside_is_relative_outside_is_absolute() {
        assert_eq!(normalize("/workspace", ".", "./.git/config"), ".git/config");
        assert_eq!(normalize("/workspace", "src", "../.git/x"), ".git/x");
        assert_eq!(normalize("/workspace", ".", "/workspace/a//b"), "a/b");
        assert_eq!(normalize("/workspace", ".", "../etc/passwd"), "/etc/passwd");
        assert_eq!(normalize("/workspace", "/tmp", "x"), "/tmp/x");
        assert_eq!(normalize("/workspace", ".", "/workspace"), ".");
        assert_eq!(
            normalize("/workspace", ".", "/workspacex/y"),
            "/workspacex/y"
        );
    }
}
