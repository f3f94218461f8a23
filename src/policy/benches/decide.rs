//! Deciding a 20-command `sh -c` script against a 1,000-rule policy, beside anchors measured in
//! the same run: parsing the script alone (brush-parser), the same decision against a 10-rule
//! policy (cost should not grow with the rule count), and against 1,000 rules the index cannot
//! narrow (program globs: a linear scan).
//!
//! `cargo bench -p luminaguard-policy --bench decide [-- --quick]`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // bench code

use std::hint::black_box;
use std::time::{Duration, Instant};

use luminaguard_policy::{Action, Policy};

const SCRIPT: &str = "cd /workspace && ls -la src | grep rs | wc -l; cat Cargo.toml | head -n 20; \
git status --short && git diff --stat; cargo build --release 2>&1 | tail -n 5; \
echo done > out.txt; find . -name '*.o' | xargs rm -f; for f in a b; do echo $f; done; \
sort x | uniq -c > counts.txt; git log --oneline | head; rm -rf target/tmp; \
echo \"$(date)\" >> log.txt; true";

fn policy(n: usize, indexable: bool) -> String {
    let mut text = String::from("version = 1\ndefault = \"ask\"\n");
    for i in 0..n {
        let prog = if indexable {
            format!("prog{i}")
        } else {
            format!("prog{i}*")
        };
        text.push_str(&format!(
            "[[rule]]\ndecision = \"ask\"\nexec = [\"{prog}\", \"sub{i}|other\", \"**\"]\n"
        ));
    }
    text.push_str(
        "[[rule]]\ndecision = \"allow\"\nprogram = [\"ls\", \"grep\", \"wc\", \"cat\", \"head\", \"tail\", \"git\", \"cargo\", \"echo\", \"find\", \"xargs\", \"sort\", \"uniq\", \"date\", \"true\", \"cd\"]\n\
         [[rule]]\ndecision = \"ask\"\nexec = [\"rm\", \"**\", \"-rf\", \"**\"]\n\
         [[rule]]\ndecision = \"allow\"\nwrite = [\"**\"]\n[[rule]]\ndecision = \"allow\"\ndelete = [\"**\"]\n",
    );
    text
}

/// Median time per call of `f` over `rounds` rounds of `iters` calls.
fn measure(rounds: usize, iters: usize, mut f: impl FnMut()) -> Duration {
    let mut samples: Vec<Duration> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed() / iters as u32
        })
        .collect();
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, iters) = if quick { (5, 50) } else { (21, 400) };
    let action = Action::shell(SCRIPT);
    let big = Policy::from_text(&policy(1000, true), "bench-1000").unwrap();
    let small = Policy::from_text(&policy(10, true), "bench-10").unwrap();
    let linear = Policy::from_text(&policy(1000, false), "bench-1000-globs").unwrap();
    let d = big.decide(&action);
    assert!(
        d.commands.iter().filter(|c| c.action == "exec").count() >= 20,
        "{:#?}",
        d.commands
    );

    let parse = measure(rounds, iters, || {
        let mut p = brush_parser::Parser::new(std::io::Cursor::new(SCRIPT), &Default::default());
        black_box(p.parse_program().unwrap());
    });
    let t_big = measure(rounds, iters, || {
        black_box(big.decide(black_box(&action)));
    });
    let t_small = measure(rounds, iters, || {
        black_box(small.decide(black_box(&action)));
    });
    let t_linear = measure(rounds, iters / 10 + 1, || {
        black_box(linear.decide(black_box(&action)));
    });
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "decide: 20-command sh -c script ({} simple commands incl. wrappers), median per decision",
        d.commands.len()
    );
    println!("{:<46} {:>10} {:>10}", "case", "µs", "× parse");
    for (name, t) in [
        ("parse the script alone (brush-parser)", parse),
        ("decide, 1,000 rules (indexed by program)", t_big),
        ("decide, 10 rules", t_small),
        ("decide, 1,000 glob-program rules (linear)", t_linear),
    ] {
        println!("{name:<46} {:>10.1} {:>10.2}", us(t), us(t) / us(parse));
    }
    println!(
        "goal: 1,000-rule decision ≤ 50 µs; 1,000 vs 10 rules: ×{:.2}",
        us(t_big) / us(t_small)
    );
}
