//! A real browser for tests: headless Chromium (Debian's `chromium`) driven over WebDriver by
//! Debian's `chromedriver` (`chromium-driver`), both installed by scripts/setup.
//!
//! [`Browser::start`] runs a chromedriver of its own on a free port of 127.0.0.1 and opens one
//! session in it; every method blocks (the WebDriver client runs on a private current-thread
//! runtime), so plain `#[test]` functions use it as they are. Each method panics, naming what it
//! was doing, on a WebDriver error or after [`COMMAND_TIMEOUT`]: failing the calling test is the
//! point. Dropping the [`Browser`] ends the session, kills chromedriver and every process in its
//! process group (Chromium's; its crash reporter, which leaves the group, exits with them), and
//! removes the browser's directory. Chromium's HOME and TMPDIR are in that directory too, so a
//! test leaves nothing in the user's. A test process killed outright (SIGKILL, abort) cannot
//! drop it: chromedriver and Chromium are then left running, in their own process group.
//!
//! Gate a test on [`browser_available`]: required in CI, skipped with a message elsewhere.
//!
//! ```no_run
//! use luminaguard_testkit::browser::{Browser, browser_available};
//! use std::time::Duration;
//!
//! if browser_available() {
//!     let b = Browser::start();
//!     b.goto("http://127.0.0.1:8080/");
//!     b.click("#go");
//!     b.wait_for_text("#greeting", "Clicked", Duration::from_secs(5));
//! }
//! ```

use std::future::Future;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

/// The Chromium binary (Debian's launcher script); `LUMINAGUARD_TEST_CHROMIUM` overrides it.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// The chromedriver binary; `LUMINAGUARD_TEST_CHROMEDRIVER` overrides it.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long one WebDriver command (a navigation, a click, a script) may take before the test
/// fails, rather than hanging the suite.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long chromedriver may take to listen and Chromium to start a session.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The Chromium binary the harness runs.
pub fn chromium() -> PathBuf {
    std::env::var_os("LUMINAGUARD_TEST_CHROMIUM").map_or_else(|| CHROMIUM.into(), PathBuf::from)
}

/// The chromedriver binary the harness runs.
pub fn chromedriver() -> PathBuf {
    std::env::var_os("LUMINAGUARD_TEST_CHROMEDRIVER")
        .map_or_else(|| CHROMEDRIVER.into(), PathBuf::from)
}

/// Whether a browser test may run: Chromium and chromedriver are installed. Outside CI their
/// absence skips the test with a message; in CI (`CI` set) it is a failure, never a silent
/// skip (scripts/setup installs them).
pub fn browser_available() -> bool {
    let missing: Vec<String> = [chromium(), chromedriver()]
        .into_iter()
        .filter(|p| !is_executable(p))
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let missing = missing.join(" and ");
    assert!(
        std::env::var_os("CI").is_none(),
        "the browser tests need {missing}, which is missing: run scripts/setup \
         (it installs Debian's chromium and chromium-driver)"
    );
    eprintln!("skipped: {missing} is missing (run scripts/setup)");
    false
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A cookie as the browser holds it, with the flags a test checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cookie {
    /// The cookie's name.
    pub name: String,
    /// Its value.
    pub value: String,
    /// `HttpOnly`: hidden from the page's scripts (`document.cookie`).
    pub http_only: bool,
    /// `Secure`: sent only over HTTPS.
    pub secure: bool,
    /// `SameSite`: `"Strict"`, `"Lax"` or `"None"`, as the browser reports it; `None` if it
    /// reports none.
    pub same_site: Option<String>,
    /// Its path, if the browser reports one.
    pub path: Option<String>,
}

/// A headless Chromium in a chromedriver of its own. See the [module](self) documentation.
#[derive(Debug)]
pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    /// The browser's profile, HOME, TMPDIR and chromedriver's log; removed on drop.
    dir: tempfile::TempDir,
    port: u16,
}

impl Browser {
    /// Starts chromedriver on a free port of 127.0.0.1, waits until it listens, and opens a
    /// session of headless Chromium (1280×900, no sandbox: CI runs as root, a fresh profile).
    /// Panics, with chromedriver's log, if either does not start.
    pub fn start() -> Browser {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("browser: a tokio runtime: {e}"));
        let dir = tempfile::Builder::new()
            .prefix("luminaguard-browser-")
            .tempdir()
            .unwrap_or_else(|e| panic!("browser: a temporary directory: {e}"));
        let port = free_port();
        let log = dir.path().join("chromedriver.log");
        // Chromium writes to HOME (its NSS database), XDG_CONFIG_HOME (the crash reporter's
        // database) and TMPDIR; all of them in the browser's own directory, so that nothing is
        // left in the user's and every process of the browser names the directory.
        let home = dir.path().join("home");
        let tmp = dir.path().join("tmp");
        for d in [&home, &tmp] {
            std::fs::create_dir(d)
                .unwrap_or_else(|e| panic!("browser: creating {}: {e}", d.display()));
        }
        let driver = Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // A process group of its own, so that drop kills Chromium with it.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("browser: running {}: {e}", chromedriver().display()));
        let mut b = Browser {
            rt,
            client: None,
            driver,
            dir,
            port,
        };
        let t0 = Instant::now();
        b.wait_listening(t0 + START_TIMEOUT);
        let profile = b.dir.path().join("profile");
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium(),
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!("a JSON object literal")
        };
        let url = format!("http://127.0.0.1:{port}");
        let connect = async {
            ClientBuilder::new(HttpConnector::new())
                .capabilities(caps)
                .connect(&url)
                .await
        };
        let left = (t0 + START_TIMEOUT).saturating_duration_since(Instant::now());
        match b.within(left, connect) {
            Some(Ok(client)) => b.client = Some(client),
            Some(Err(e)) => panic!("browser: a Chromium session: {e}\n{}", b.driver_log()),
            None => panic!(
                "browser: no Chromium session within {START_TIMEOUT:?}\n{}",
                b.driver_log()
            ),
        }
        b
    }

    /// The port chromedriver listens on (127.0.0.1).
    pub fn driver_port(&self) -> u16 {
        self.port
    }

    /// The browser's own directory, removed on drop: its profile (`profile`, Chromium's
    /// `--user-data-dir`), its HOME (`home`), TMPDIR (`tmp`) and chromedriver's log. Chromium's
    /// processes name it on their command lines (a test can check none is left).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Chromedriver's log so far (for a failing test's message).
    pub fn driver_log(&self) -> String {
        let log = self.dir.path().join("chromedriver.log");
        match std::fs::read_to_string(&log) {
            Ok(s) => {
                // The end is where the failure is.
                let start = s.len().saturating_sub(8000);
                let start = (start..s.len())
                    .find(|&i| s.is_char_boundary(i))
                    .unwrap_or(s.len());
                format!("chromedriver's log:\n{}", &s[start..])
            }
            Err(e) => format!("chromedriver's log ({}): {e}", log.display()),
        }
    }

    fn wait_listening(&mut self, deadline: Instant) {
        let addr = format!("127.0.0.1:{}", self.port);
        loop {
            let up = self
                .rt
                .block_on(async { tokio::net::TcpStream::connect(&addr).await.is_ok() });
            if up {
                return;
            }
            if let Ok(Some(status)) = self.driver.try_wait() {
                panic!(
                    "browser: chromedriver exited ({status}) before listening on {addr}\n{}",
                    self.driver_log()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "browser: chromedriver not listening on {addr} within {START_TIMEOUT:?}\n{}",
                    self.driver_log()
                );
            }
            self.pause(Duration::from_millis(20));
        }
    }

    /// The WebDriver client, for what the helpers do not cover: runs `f` on the browser's
    /// runtime and returns its result (no timeout of the harness's).
    pub fn with<T, F, Fut>(&self, f: F) -> T
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = T>,
    {
        self.rt.block_on(f(self.client().clone()))
    }

    /// Runs `fut` on the private runtime for at most `limit`: `None` if it did not finish.
    /// (The timer is made inside the runtime: tokio's timers need its context when created.)
    fn within<F: Future>(&self, limit: Duration, fut: F) -> Option<F::Output> {
        self.rt
            .block_on(async move { tokio::time::timeout(limit, fut).await.ok() })
    }

    /// Sleeps on the private runtime (the page's work goes on meanwhile).
    fn pause(&self, d: Duration) {
        self.rt.block_on(async move { tokio::time::sleep(d).await });
    }

    fn client(&self) -> &Client {
        match &self.client {
            Some(c) => c,
            None => panic!("browser: no session"),
        }
    }

    /// Runs one WebDriver step, failing the test on its error or after [`COMMAND_TIMEOUT`].
    fn run<T, E: std::fmt::Display>(
        &self,
        what: impl std::fmt::Display,
        fut: impl Future<Output = Result<T, E>>,
    ) -> T {
        match self.within(COMMAND_TIMEOUT, fut) {
            Some(Ok(v)) => v,
            Some(Err(e)) => panic!("browser: {what}: {e}"),
            None => panic!("browser: {what}: no answer within {COMMAND_TIMEOUT:?}"),
        }
    }

    /// Navigates to `url` and waits for the page to load.
    pub fn goto(&self, url: &str) {
        self.run(format_args!("goto {url}"), self.client().goto(url));
    }

    /// The current page's URL.
    pub fn current_url(&self) -> String {
        self.run("current url", self.client().current_url())
            .to_string()
    }

    /// The current page's title.
    pub fn title(&self) -> String {
        self.run("title", self.client().title())
    }

    /// The rendered text of the first element matching the CSS selector `css`.
    pub fn text_of(&self, css: &str) -> String {
        let c = self.client();
        self.run(format_args!("text of {css:?}"), async {
            c.find(Locator::Css(css)).await?.text().await
        })
    }

    /// Whether an element matches the CSS selector `css` now.
    pub fn exists(&self, css: &str) -> bool {
        let c = self.client();
        !self
            .run(
                format_args!("find all {css:?}"),
                c.find_all(Locator::Css(css)),
            )
            .is_empty()
    }

    /// Clicks the first element matching the CSS selector `css`.
    pub fn click(&self, css: &str) {
        let c = self.client();
        self.run(format_args!("click {css:?}"), async {
            c.find(Locator::Css(css)).await?.click().await
        });
    }

    /// Replaces the value of the input matching the CSS selector `css` with `text`, typed as
    /// a person would (key events).
    pub fn fill(&self, css: &str, text: &str) {
        let c = self.client();
        self.run(format_args!("fill {css:?}"), async {
            let e = c.find(Locator::Css(css)).await?;
            e.clear().await?;
            e.send_keys(text).await
        });
    }

    /// Sends `keys` to the first element matching `css` as key events (WebDriver's special
    /// keys as their code points, e.g. `"\u{E007}"` for Enter): what a keyboard user does.
    pub fn press(&self, css: &str, keys: &str) {
        let c = self.client();
        self.run(format_args!("keys to {css:?}"), async {
            c.find(Locator::Css(css)).await?.send_keys(keys).await
        });
    }

    /// Resizes the browser's window (a narrow one: a phone, a side panel).
    pub fn resize(&self, width: u32, height: u32) {
        self.run(
            format_args!("resize to {width}x{height}"),
            self.client().set_window_size(width, height),
        );
    }

    /// Waits until an element matches the CSS selector `css`, polling; fails the test after
    /// `timeout`.
    pub fn wait_for(&self, css: &str, timeout: Duration) {
        let c = self.client();
        let wait = c
            .wait()
            .at_most(timeout)
            .every(Duration::from_millis(50))
            .for_element(Locator::Css(css));
        match self.within(timeout + COMMAND_TIMEOUT, wait) {
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("browser: waiting {timeout:?} for {css:?}: {e}"),
            None => panic!("browser: waiting {timeout:?} for {css:?}: no answer"),
        }
    }

    /// Waits until the text of the element matching `css` contains `text`, polling; fails the
    /// test after `timeout`, saying what the text was. Returns the text.
    pub fn wait_for_text(&self, css: &str, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let c = self.client();
        loop {
            let now = self.within(COMMAND_TIMEOUT, async {
                c.find(Locator::Css(css)).await?.text().await
            });
            let last = match now {
                Some(Ok(t)) if t.contains(text) => return t,
                Some(Ok(t)) => format!("text {t:?}"),
                Some(Err(e)) => e.to_string(),
                None => "no answer".to_owned(),
            };
            if Instant::now() >= deadline {
                panic!("browser: waiting {timeout:?} for {css:?} to contain {text:?}: last {last}");
            }
            self.pause(Duration::from_millis(50));
        }
    }

    /// The current page's source (the DOM serialized now, with what scripts changed).
    pub fn page_source(&self) -> String {
        self.run("page source", self.client().source())
    }

    /// Runs `js` as the body of a function in the page (`return …` gives its value) and
    /// returns what it returned, as JSON.
    pub fn execute(&self, js: &str) -> Value {
        self.run("execute script", self.client().execute(js, Vec::new()))
    }

    /// A screenshot of the viewport, PNG, written to `path` (its directory must exist).
    pub fn screenshot(&self, path: &Path) {
        let png = self.run("screenshot", self.client().screenshot());
        std::fs::write(path, png)
            .unwrap_or_else(|e| panic!("browser: writing the screenshot {}: {e}", path.display()));
    }

    /// The cookies the browser holds for the current page, with their flags.
    pub fn cookies(&self) -> Vec<Cookie> {
        self.run("cookies", self.client().get_all_cookies())
            .into_iter()
            .map(|c| Cookie {
                name: c.name().to_owned(),
                value: c.value().to_owned(),
                http_only: c.http_only().unwrap_or(false),
                secure: c.secure().unwrap_or(false),
                same_site: c.same_site().map(|s| s.to_string()),
                path: c.path().map(str::to_owned),
            })
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // End the session (chromedriver quits Chromium), then kill what is left: chromedriver's
        // whole process group, Chromium's processes included. Never panics.
        if let Some(client) = self.client.take() {
            let _ = self.within(Duration::from_secs(10), client.close());
        }
        if let Ok(pid) = i32::try_from(self.driver.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A port of 127.0.0.1 free now (the kernel's pick for a bound, then closed, listener).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("browser: a free port on 127.0.0.1: {e}"))
}
