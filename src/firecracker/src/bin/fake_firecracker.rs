//! `luminaguard-fake-firecracker`: a stand-in for the `firecracker` binary in tests (feature
//! `testing`). Takes Firecracker's `--api-sock`, `--id`, `--seccomp-filter` and the jailer's
//! `--start-time-us`, `--start-time-cpu-us`, `--parent-cpu-time-us`; refuses `--no-seccomp` and
//! anything else. Reads its [`Plan`] from the file named by `LUMINAGUARD_FAKE_FIRECRACKER_PLAN`,
//! else `fake-firecracker.plan.json` next to the API socket, else uses the default plan; serves
//! the fake API there, records every request to `fake-firecracker.requests.jsonl` (in
//! `LUMINAGUARD_FAKE_FIRECRACKER_RECORD_DIR` if set, else next to the API socket), and after
//! `InstanceStart` runs the fake guest.
//!
//! Started by the fake jailer (`LUMINAGUARD_FAKE_JAIL=<chroot>` with `…_UID` and `…_GID`), it
//! does what the real jailer does before exec and the fake jailer cannot (the fake binary is
//! dynamically linked): chroot into the jail, `chdir("/")`, drop to the uid and gid — before
//! anything else, so every path it is given resolves inside the chroot, as Firecracker's do.

use std::path::PathBuf;
use std::process::ExitCode;

use luminaguard_firecracker::testing::{
    ARGV_FILE, FLOOD_DONE, FLOOD_FAILED, FakeApi, FakeEvent, GuestBehaviour, JAIL_ENV,
    JAIL_GID_ENV, JAIL_UID_ENV, PLAN_ENV, PLAN_FILE, Plan, RECORD_DIR_ENV, RECORD_FILE, Startup,
    console_flood, guest,
};

struct Args {
    api_sock: PathBuf,
    id: String,
    seccomp_filter: Option<PathBuf>,
    all: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let all: Vec<String> = std::env::args().skip(1).collect();
    let mut api_sock = None;
    let mut id = None;
    let mut seccomp_filter = None;
    let mut it = all.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--api-sock" => api_sock = Some(PathBuf::from(value()?)),
            "--id" => id = Some(value()?),
            "--seccomp-filter" => seccomp_filter = Some(PathBuf::from(value()?)),
            "--start-time-us" | "--start-time-cpu-us" | "--parent-cpu-time-us" => {
                value()?.parse::<u64>().map_err(|e| format!("{arg}: {e}"))?;
            }
            "--no-seccomp" => return Err("--no-seccomp is refused: seccomp must stay on".into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        api_sock: api_sock.ok_or("--api-sock is required")?,
        id: id.ok_or("--id is required")?,
        seccomp_filter,
        all,
    })
}

fn exit_with(code: i32, stderr: &str) -> ! {
    eprint!("{stderr}");
    std::process::exit(code)
}

/// The jail the fake jailer set up: chroot, uid, gid.
fn jail_from_env() -> Result<Option<(PathBuf, u32, u32)>, String> {
    let Some(root) = std::env::var_os(JAIL_ENV) else {
        return Ok(None);
    };
    let id = |name: &str| -> Result<u32, String> {
        std::env::var(name)
            .map_err(|e| format!("{name}: {e}"))?
            .parse()
            .map_err(|e| format!("{name}: {e}"))
    };
    Ok(Some((
        PathBuf::from(root),
        id(JAIL_UID_ENV)?,
        id(JAIL_GID_ENV)?,
    )))
}

/// chroot, chdir, drop privileges: what the jailer does right before exec.
fn enter_jail(root: &std::path::Path, uid: u32, gid: u32) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(root.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: plain system calls on a valid C string; single-threaded (no runtime yet).
    unsafe {
        if libc::chroot(c.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
            return Err(format!(
                "chroot {}: {}",
                root.display(),
                std::io::Error::last_os_error()
            ));
        }
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setresgid(gid, gid, gid) != 0
            || libc::setresuid(uid, uid, uid) != 0
        {
            return Err(format!(
                "drop to {uid}:{gid}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fake firecracker: {e}");
            return ExitCode::from(2);
        }
    };
    let jail = match jail_from_env() {
        Ok(j) => j,
        Err(e) => {
            eprintln!("fake firecracker: {e}");
            return ExitCode::from(2);
        }
    };
    // The API socket's directory as the host sees it.
    let Some(sock_dir) = args.api_sock.parent().map(PathBuf::from) else {
        eprintln!("fake firecracker: --api-sock has no directory");
        return ExitCode::from(2);
    };
    let host_sock_dir = match &jail {
        Some((root, _, _)) => root.join(sock_dir.strip_prefix("/").unwrap_or(&sock_dir)),
        None => sock_dir.clone(),
    };
    let record_dir = std::env::var_os(RECORD_DIR_ENV).map_or(host_sock_dir.clone(), PathBuf::from);
    // Everything on the host side is opened before the chroot.
    let argv_json = serde_json::to_vec(&args.all).unwrap_or_default();
    #[allow(clippy::disallowed_methods)] // no runtime yet
    if let Err(e) = std::fs::write(record_dir.join(ARGV_FILE), argv_json) {
        eprintln!("fake firecracker: cannot write {ARGV_FILE}: {e}");
        return ExitCode::from(2);
    }
    let record = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(record_dir.join(RECORD_FILE))
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fake firecracker: cannot open {RECORD_FILE}: {e}");
            return ExitCode::from(2);
        }
    };
    let plan_file =
        std::env::var_os(PLAN_ENV).map_or_else(|| host_sock_dir.join(PLAN_FILE), PathBuf::from);
    #[allow(clippy::disallowed_methods)] // no runtime yet
    let plan: Plan = match std::fs::read(&plan_file) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("fake firecracker: bad {PLAN_FILE}: {e}");
                return ExitCode::from(2);
            }
        },
        Err(_) => Plan::default(),
    };
    if let Some((root, uid, gid)) = &jail
        && let Err(e) = enter_jail(root, *uid, *gid)
    {
        eprintln!("fake firecracker: {e}");
        return ExitCode::from(1);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fake firecracker: no runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(serve(args, plan, record))
}

async fn serve(args: Args, plan: Plan, record: std::fs::File) -> ExitCode {
    if let Some(filter) = &args.seccomp_filter
        && let Err(e) = tokio::fs::metadata(filter).await
    {
        eprintln!("Seccomp error: cannot open {}: {e}", filter.display());
        return ExitCode::from(1);
    }
    match &plan.startup {
        Startup::Serve => {}
        Startup::NeverCreateSocket => std::future::pending::<()>().await,
        Startup::Exit { code, stderr } => exit_with(*code, stderr),
    }
    // The guest's reseeds are recorded beside the API requests, as `AGENT reseed`.
    let guest_record = record.try_clone().ok();
    let mut api = match FakeApi::start(&args.api_sock, &args.id, plan.clone(), Some(record)) {
        Ok(api) => api,
        Err(e) => {
            eprintln!(
                "Failed to open the API socket {}: {e}",
                args.api_sock.display()
            );
            return ExitCode::from(1);
        }
    };
    let (guest_tx, mut guest_rx) = tokio::sync::mpsc::channel(4);
    let (reset_tx, reset_rx) = tokio::sync::watch::channel(0u64);
    loop {
        tokio::select! {
            event = api.next_event() => match event {
                Some(FakeEvent::Started { vsock, restored }) => {
                    if let GuestBehaviour::Crash { code, stderr } = &plan.guest {
                        exit_with(*code, stderr);
                    }
                    if plan.console.flood > 0 {
                        flood_console(plan.console.flood);
                    }
                    if let Some((uds, listener)) = vsock {
                        tokio::spawn(guest::run(
                            plan.guest.clone(),
                            uds,
                            listener,
                            guest_tx.clone(),
                            restored,
                            reset_rx.clone(),
                        ));
                    }
                }
                Some(FakeEvent::VsockReset) => {
                    reset_tx.send_modify(|g| *g += 1);
                }
                Some(FakeEvent::Exit { code, stderr }) => exit_with(code, &stderr),
                Some(FakeEvent::CtrlAltDel) | None => return ExitCode::SUCCESS,
            },
            Some(event) = guest_rx.recv() => match event {
                guest::GuestEvent::PowerOff => return ExitCode::SUCCESS,
                guest::GuestEvent::Agent { what, body, recorded } => {
                    record_agent(guest_record.as_ref(), what, body);
                    let _ = recorded.send(());
                }
            },
        }
    }
}

/// Appends `AGENT <what> <body>` to the request record: what the fake guest's agent was asked
/// that a test checks (`reseed`, `set-clock`).
fn record_agent(file: Option<&std::fs::File>, what: &str, body: serde_json::Value) {
    use std::io::Write as _;
    let recorded = luminaguard_firecracker::testing::Recorded {
        method: "AGENT".into(),
        path: what.into(),
        body,
        accepted: true,
        fault: None,
    };
    let line = serde_json::to_string(&recorded).unwrap_or_default() + "\n";
    if let Some(mut f) = file {
        // One short append to a local file, in a test fake.
        if let Err(e) = f.write_all(line.as_bytes()) {
            eprintln!("fake firecracker: cannot record AGENT {what}: {e}");
        }
    }
}

/// Prints the first `len` bytes of [`console_flood`] on stdout (the serial console) from a
/// thread of its own, then says on stderr how that ended.
fn flood_console(len: u64) {
    std::thread::spawn(move || {
        use std::io::Write as _;
        const PIECE: u64 = 64 * 1024;
        let mut out = std::io::stdout().lock();
        let mut at = 0;
        let result = loop {
            if at >= len {
                break out.flush();
            }
            let end = at.saturating_add(PIECE).min(len);
            if let Err(e) = out.write_all(&console_flood(at..end)) {
                break Err(e);
            }
            at = end;
        };
        match result {
            Ok(()) => eprintln!("{FLOOD_DONE}"),
            Err(e) => eprintln!("{FLOOD_FAILED}{e}"),
        }
    });
}
