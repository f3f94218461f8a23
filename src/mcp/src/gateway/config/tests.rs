use super::*;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;

const FULL: &str = r#"
[scan]
arguments = "block"
results = "redact"
shapes = true

[secrets]
file = "~/.config/luminaguard/secrets.toml"

[servers.fs]
command = ["node", "/opt/mcp/fs/dist/index.js", "/workspace"]
backend = "process"
image = "node"
workspace = "~/project"
read_only = false
network = ["api.github.com:443", "10.0.0.0/8"]
env = { GITHUB_TOKEN = { secret = "github" }, LOG = "debug", PATHX = { env = "HOST_VAR" } }
tools = { allow = ["read_file", "list_*"] }
start = "eager"
mounts = [{ host = "cache/x", at = "/opt/mcp/x" }]
memory = "512M"
cpus = 2
pids = 256
call_timeout = "60s"
cwd = "/workspace"

[servers.web-2]
command = ["mcp-web"]
tools = { deny = ["*delete*"] }
"#;

fn parse(text: &str) -> Result<GatewayConfig, ConfigError> {
    GatewayConfig::parse(text, Path::new("/etc/lg"), Some(Path::new("/home/me")))
}

fn error(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn the_full_example_parses() {
    let c = parse(FULL).unwrap();
    assert_eq!(c.scan, ScanConfig::default());
    assert_eq!(
        c.secrets_file.as_deref(),
        Some(Path::new("/home/me/.config/luminaguard/secrets.toml"))
    );
    let fs = c.server("fs").unwrap();
    assert_eq!(fs.command[0], "node");
    assert_eq!(fs.backend, BackendChoice::Process);
    assert_eq!(fs.image.as_deref(), Some("node"));
    assert_eq!(fs.workspace.as_deref(), Some(Path::new("/home/me/project")));
    assert_eq!(fs.network.len(), 2);
    assert_eq!(fs.env["GITHUB_TOKEN"], EnvValue::Secret("github".into()));
    assert_eq!(fs.env["LOG"], EnvValue::Literal("debug".into()));
    assert_eq!(fs.env["PATHX"], EnvValue::Env("HOST_VAR".into()));
    assert_eq!(fs.start, StartMode::Eager);
    assert_eq!(
        fs.mounts,
        [MountSpec {
            host: "/etc/lg/cache/x".into(),
            at: "/opt/mcp/x".into()
        }]
    );
    assert_eq!(fs.memory, Some(ByteSize::mib(512)));
    assert_eq!((fs.cpus, fs.pids), (Some(2), Some(256)));
    assert_eq!(fs.call_timeout, Duration::from_secs(60));
    assert_eq!(fs.cwd.as_deref(), Some(Path::new("/workspace")));
    assert!(fs.tools.allows("read_file") && fs.tools.allows("list_dirs"));
    assert!(!fs.tools.allows("write_file") && !fs.tools.allows("xlist_"));

    let web = c.server("web-2").unwrap();
    assert_eq!(web.backend, BackendChoice::Auto);
    assert_eq!(web.start, StartMode::Lazy);
    assert_eq!(web.call_timeout, DEFAULT_CALL_TIMEOUT);
    assert!(web.network.is_empty() && web.env.is_empty() && web.mounts.is_empty());
    assert!(web.tools.allows("fetch") && !web.tools.allows("bulk_delete_all"));
    assert_eq!(c.servers.keys().collect::<Vec<_>>(), ["fs", "web-2"]);
}

#[test]
fn globs_match_with_star_only() {
    let cases = [
        ("a*", "abc", true),
        ("*c", "abc", true),
        ("a*c", "ac", true),
        ("a*b*c", "axbyc", true),
        ("a*b*c", "axcyb", false),
        ("ab", "ab", true),
        ("ab", "abc", false),
        ("*", "", true),
        ("a*a", "a", false),
        ("read.file", "readxfile", false),
    ];
    for (glob, text, want) in cases {
        assert_eq!(glob_match(glob, text), want, "{glob} vs {text}");
    }
    assert!(ToolFilter::All.allows("anything"));
}

#[test]
fn unknown_keys_are_refused_with_position_and_server() {
    let msg = error("[servers.fs]\ncommand = [\"x\"]\ncomand = [\"y\"]\n");
    assert!(msg.contains("comand") && msg.contains("line 3"), "{msg}");
    assert!(msg.starts_with("server `fs`"), "{msg}");
    let msg = error("[scan]\nshape = true\n[servers.fs]\ncommand = [\"x\"]\n");
    assert!(msg.contains("shape") && msg.contains("line 2"), "{msg}");
    assert!(!msg.contains("server `"), "{msg}");
    let msg = error("[servers.fs]\ncommand = [\"x\"]\n[scan]\nshape = true\n");
    assert!(!msg.contains("server `"), "{msg}");
    let msg = error("[servers]\na = { command = [\"x\"] }\nb = { command = [\"x\"], x = 1 }\n");
    assert!(msg.starts_with("server `b`"), "{msg}");
    let msg = error(
        "[servers.a]\ncommand = [\"x\"]\n[servers.b]\ncommand = [\"x\"]\n[servers.b.env]\nA = 1\n",
    );
    assert!(
        msg.starts_with("server `b`") && msg.contains("line 6"),
        "{msg}"
    );
    let msg = error("[servers.fs]\ncommand = [\"x\"]\nbackend = \"docker\"\n");
    assert!(
        msg.contains("docker") && msg.contains("server `fs`"),
        "{msg}"
    );
    let msg = error("[servers.fs]\ncommand = [\"x\"]\nnetwork = [\"a.com:0\"]\n");
    assert!(msg.contains("a.com:0"), "{msg}");
    let msg = error("[servers.fs]\ncommand = [\"x\"]\ncall_timeout = \"soon\"\n");
    assert!(msg.contains("soon"), "{msg}");
}

#[test]
fn server_names_are_checked() {
    for (name, why) in [
        ("Fs", "a-z"),
        ("-fs", "start"),
        ("my__fs", "SERVER__TOOL"),
        ("a23456789012345678901234567890123", "32"),
    ] {
        let msg = error(&format!("[servers.\"{name}\"]\ncommand = [\"x\"]\n"));
        assert!(msg.contains(name) && msg.contains(why), "{msg}");
    }
    assert!(matches!(
        parse("[scan]\nshapes = false\n"),
        Err(ConfigError::NoServers)
    ));
}

#[test]
fn server_settings_are_checked() {
    let cases = [
        ("command = []", "command is empty"),
        ("command = [\"\"]", "command is empty"),
        (
            "command = [\"x\"]\ntools = { allow = [\"a\"], deny = [\"b\"] }",
            "not both",
        ),
        ("command = [\"x\"]\ntools = { allow = [] }", "no tools"),
        ("command = [\"x\"]\nread_only = true", "no workspace"),
        (
            "command = [\"x\"]\nenv = { \"BAD-NAME\" = \"1\" }",
            "BAD-NAME",
        ),
        (
            "command = [\"x\"]\nenv = { LD_PRELOAD = \"/x.so\" }",
            "LD_*",
        ),
        (
            "command = [\"x\"]\nenv = { A = { secret = \"s\", env = \"E\" } }",
            "exactly one",
        ),
        (
            "command = [\"x\"]\nenv = { A = { secret = \"s\" } }",
            "no [secrets] file",
        ),
        ("command = [\"x\"]\nenv = { A = { env = \"1X\" } }", "1X"),
        (
            "command = [\"x\"]\nmounts = [{ host = \"/h\", at = \"rel/x\" }]",
            "mount at: rel/x is not absolute",
        ),
        (
            "command = [\"x\"]\nmounts = [{ host = \"/h\", at = \"/a/../b\" }]",
            "..",
        ),
        ("command = [\"x\"]\nworkspace = \"~bob/x\"", "only `~`"),
        ("command = [\"x\"]\ncpus = 0", "at least 1"),
        ("command = [\"x\"]\ncall_timeout = \"0s\"", "more than zero"),
        ("command = [\"x\"]\ncwd = \"work\"", "cwd"),
    ];
    for (body, want) in cases {
        let msg = error(&format!("[secrets]\n[servers.fs]\n{body}\n"));
        assert!(msg.contains(want), "{body}: {msg}");
        assert!(msg.contains("fs"), "{body}: {msg}");
    }
    let msg = error("[servers.fs]\ncommand = [\"x\"]\nenv = { A = 3 }\n");
    assert!(msg.contains("secret = "), "{msg}");
    let msg = GatewayConfig::parse(
        "[servers.fs]\ncommand = [\"x\"]\nworkspace = \"~/w\"\n",
        Path::new("/"),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("HOME"), "{msg}");
}

/// A config with a secrets file holding `text` at `mode`, in a fresh directory.
fn with_secrets(text: &str, mode: u32) -> (tempfile::TempDir, GatewayConfig) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets.toml");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .unwrap();
    let config = dir.path().join("gateway.toml");
    let mut f = std::fs::File::create(&config).unwrap();
    f.write_all(
        b"[secrets]\nfile = \"secrets.toml\"\n[servers.gh]\ncommand = [\"x\"]\n\
          env = { TOKEN = { secret = \"github\" }, HOSTV = { env = \"MY_VAR\" }, L = \"lit\" }\n",
    )
    .unwrap();
    let loaded = GatewayConfig::load(&config).unwrap();
    (dir, loaded)
}

const TOKEN: &str = "tok-0123456789abcdef";

#[test]
fn env_resolves_from_secrets_file_and_environment() {
    let (_dir, c) = with_secrets(&format!("github = \"{TOKEN}\"\n"), 0o600);
    let secrets = c.read_secrets().unwrap();
    assert!(!format!("{secrets:?}").contains(TOKEN));
    let lookup = |v: &str| (v == "MY_VAR").then(|| "host-value-123".to_owned());
    let env = c.resolve_env("gh", &secrets, lookup).unwrap();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.expose())).collect();
    assert_eq!(
        env,
        [("HOSTV", "host-value-123"), ("L", "lit"), ("TOKEN", TOKEN)]
    );
    let values = c.secret_values(&secrets, lookup).unwrap();
    let names: Vec<&str> = values.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["env:MY_VAR", "github"]);

    let msg = c
        .resolve_env("gh", &secrets, |_| None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("MY_VAR") && msg.contains("HOSTV"), "{msg}");
    let msg = c
        .resolve_env("nope", &secrets, |_| None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("nope"), "{msg}");
}

#[test]
fn a_missing_secret_is_named_never_shown() {
    let (_dir, c) = with_secrets(&format!("gitlab = \"{TOKEN}\"\n"), 0o600);
    let secrets = c.read_secrets().unwrap();
    let lookup = |_: &str| Some("x".repeat(10));
    let msg = c
        .resolve_env("gh", &secrets, lookup)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("`github`") && msg.contains("TOKEN"), "{msg}");
    assert!(!msg.contains(TOKEN), "{msg}");
}

#[test]
fn a_group_readable_secrets_file_is_refused() {
    for mode in [0o640, 0o604, 0o620] {
        let (_dir, c) = with_secrets(&format!("github = \"{TOKEN}\"\n"), mode);
        let msg = c.read_secrets().unwrap_err().to_string();
        assert!(
            msg.contains("secrets.toml") && msg.contains("chmod 600"),
            "{msg}"
        );
        assert!(!msg.contains(TOKEN));
    }
}

#[test]
fn a_bad_secrets_file_gives_the_position_not_the_text() {
    for text in [
        format!("github = {TOKEN}\n"),
        format!("ok = \"x\"\ngithub = 12345678\n# {TOKEN}"),
    ] {
        let (_dir, c) = with_secrets(&text, 0o600);
        let msg = c.read_secrets().unwrap_err().to_string();
        assert!(
            msg.contains("line ") && msg.contains("secrets.toml"),
            "{msg}"
        );
        assert!(!msg.contains(TOKEN) && !msg.contains("12345678"), "{msg}");
    }
}

#[test]
fn load_names_the_file_and_resolves_against_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(b"[servers.a]\ncommand = [\"x\"]\nworkspace = \"w/../ws\"\nbogus = 1\n")
        .unwrap();
    let msg = GatewayConfig::load(&path).unwrap_err().to_string();
    assert!(msg.contains("gw.toml") && msg.contains("bogus"), "{msg}");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(b"[servers.a]\ncommand = [\"x\"]\nworkspace = \"w/../ws\"\n")
        .unwrap();
    let c = GatewayConfig::load(&path).unwrap();
    assert_eq!(c.servers["a"].workspace, Some(dir.path().join("ws")));
    let msg = GatewayConfig::load(&dir.path().join("none.toml"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("none.toml"), "{msg}");
}
