//! `luminaguard-fake-firecracker`: a stand-in for the `firecracker` binary in tests (feature
//! `testing`). Takes Firecracker's `--api-sock`, `--id` and `--seccomp-filter`; refuses
//! `--no-seccomp` and anything else. Reads its [`Plan`] from the file named by
//! `LUMINAGUARD_FAKE_FIRECRACKER_PLAN`, else `fake-firecracker.plan.json` next to the API socket,
//! else uses the default plan; serves the fake API there, records every request to
//! `fake-firecracker.requests.jsonl`, and after `InstanceStart` runs the fake guest.

use std::path::PathBuf;
use std::process::ExitCode;

use luminaguard_firecracker::testing::{
    ARGV_FILE, FakeApi, FakeEvent, GuestBehaviour, PLAN_ENV, PLAN_FILE, Plan, RECORD_FILE, Startup,
    guest,
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

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fake firecracker: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(dir) = args.api_sock.parent().map(PathBuf::from) else {
        eprintln!("fake firecracker: --api-sock has no directory");
        return ExitCode::from(2);
    };
    let argv_json = serde_json::to_vec(&args.all).unwrap_or_default();
    if let Err(e) = tokio::fs::write(dir.join(ARGV_FILE), argv_json).await {
        eprintln!("fake firecracker: cannot write {ARGV_FILE}: {e}");
        return ExitCode::from(2);
    }
    let plan_file = std::env::var_os(PLAN_ENV).map_or_else(|| dir.join(PLAN_FILE), PathBuf::from);
    let plan: Plan = match tokio::fs::read(&plan_file).await {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("fake firecracker: bad {PLAN_FILE}: {e}");
                return ExitCode::from(2);
            }
        },
        Err(_) => Plan::default(),
    };
    if let Some(filter) = &args.seccomp_filter {
        if let Err(e) = tokio::fs::metadata(filter).await {
            eprintln!("Seccomp error: cannot open {}: {e}", filter.display());
            return ExitCode::from(1);
        }
    }
    match &plan.startup {
        Startup::Serve => {}
        Startup::NeverCreateSocket => std::future::pending::<()>().await,
        Startup::Exit { code, stderr } => exit_with(*code, stderr),
    }
    let mut api = match FakeApi::start(
        &args.api_sock,
        &args.id,
        plan.clone(),
        Some(dir.join(RECORD_FILE)),
    ) {
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
    loop {
        tokio::select! {
            event = api.next_event() => match event {
                Some(FakeEvent::Started { vsock }) => {
                    if let GuestBehaviour::Crash { code, stderr } = &plan.guest {
                        exit_with(*code, stderr);
                    }
                    if let Some((uds, listener)) = vsock {
                        tokio::spawn(guest::run(plan.guest.clone(), uds, listener, guest_tx.clone()));
                    }
                }
                Some(FakeEvent::Exit { code, stderr }) => exit_with(code, &stderr),
                Some(FakeEvent::CtrlAltDel) | None => return ExitCode::SUCCESS,
            },
            Some(guest::GuestEvent::PowerOff) = guest_rx.recv() => return ExitCode::SUCCESS,
        }
    }
}
