//! Command output on stdout. A closed stdout (`luminaguard sandbox ls | head -1`) ends the
//! program quietly — the way a pipeline's writer ends when its reader is gone — never with a
//! panic, which is what `println!` does.

/// Exit status for a closed stdout: as if killed by `SIGPIPE` (128 + 13), which is what a
/// shell reports for any other pipeline writer whose reader left.
pub const CLOSED_STDOUT: i32 = 141;

/// Writes `args` (and a newline when `newline`) to stdout and flushes. On a closed stdout the
/// process exits quietly with [`CLOSED_STDOUT`]; on any other failure it says so on stderr and
/// exits 1.
pub fn write(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| {
            if newline {
                out.write_all(b"\n")
            } else {
                Ok(())
            }
        })
        .and_then(|()| out.flush());
    if let Err(e) = written {
        ended(&e);
    }
}

/// Ends the program for a failed write to stdout (see [`write`]).
pub fn ended(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(CLOSED_STDOUT);
    }
    eprintln!("luminaguard: cannot write to stdout: {e}");
    std::process::exit(1)
}

/// `println!` for command output, see the module.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::out::write(format_args!($($arg)*), true) };
}

/// `print!` for command output, see the module.
macro_rules! out {
    ($($arg:tt)*) => { $crate::out::write(format_args!($($arg)*), false) };
}
