//! A `luminaguard daemon` for a test: started with its own runtime directory and configuration,
//! waited for by its readiness message (`NOTIFY_SOCKET`, as systemd's `Type=notify` does), and
//! stopped (SIGTERM, then SIGKILL) when dropped.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a daemon may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running daemon.
#[derive(Debug)]
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    pub runtime: PathBuf,
    pub config: PathBuf,
    bin: PathBuf,
}

impl Daemon {
    /// Starts `bin daemon` with runtime directory `runtime` and `config` (TOML) as its
    /// configuration file, and waits until it is ready.
    pub fn start(bin: &Path, runtime: &Path, config: &str) -> Self {
        let file = runtime.with_extension("toml");
        std::fs::write(&file, config).unwrap_or_else(|e| panic!("writing {file:?}: {e}"));
        Self::start_with(bin, runtime, &file, |_| {})
    }

    /// The same with the configuration file given, and `adjust` applied to the command.
    pub fn start_with(
        bin: &Path,
        runtime: &Path,
        config: &Path,
        adjust: impl FnOnce(&mut Command),
    ) -> Self {
        let notify = runtime.with_extension("notify");
        let _ = std::fs::remove_file(&notify);
        let listener =
            UnixDatagram::bind(&notify).unwrap_or_else(|e| panic!("binding {notify:?}: {e}"));
        listener
            .set_read_timeout(Some(READY_TIMEOUT))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut cmd = Command::new(bin);
        cmd.arg("--runtime-dir")
            .arg(runtime)
            .arg("--config")
            .arg(config)
            .arg("daemon")
            .env("NOTIFY_SOCKET", &notify)
            .stdin(Stdio::null());
        adjust(&mut cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting the daemon: {e}"));
        let mut child = child;
        let mut buf = [0u8; 64];
        let failed = match listener.recv(&mut buf) {
            Ok(n) if &buf[..n] == b"READY=1" => None,
            Ok(n) => Some(format!(
                "unexpected notification {:?}",
                String::from_utf8_lossy(&buf[..n])
            )),
            Err(e) => Some(format!(
                "the daemon did not say it was ready within {READY_TIMEOUT:?}: {e}"
            )),
        };
        if let Some(why) = failed {
            let _ = child.kill();
            let status = child.wait();
            panic!("{why} (daemon: {status:?})");
        }
        let _ = std::fs::remove_file(&notify);
        Self {
            child,
            socket: runtime.join("api.sock"),
            runtime: runtime.to_owned(),
            config: config.to_owned(),
            bin: bin.to_owned(),
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap_or(i32::MAX)
    }

    /// SIGTERM, and its exit status once it has stopped.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGTERM,
        );
        self.child.wait().unwrap_or_else(|e| panic!("{e}"))
    }

    /// SIGKILL: a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A new daemon on the same runtime directory and configuration.
    pub fn restart(&self) -> Self {
        Self::start_with(&self.bin, &self.runtime, &self.config, |_| {})
    }
}

impl Drop for Daemon {
    /// Stops the daemon and destroys every sandbox left in its runtime directory (a test's
    /// long-lived sandboxes outlive the daemon by design; they must not outlive the test).
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
        let Ok(entries) = std::fs::read_dir(self.runtime.join("sandboxes")) else {
            return;
        };
        let ids: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        if ids.is_empty() {
            return;
        }
        let _ = Command::new(&self.bin)
            .arg("--runtime-dir")
            .arg(&self.runtime)
            .args(["--no-daemon", "sandbox", "rm"])
            .args(&ids)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
