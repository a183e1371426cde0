//! The ceiling's bare server as a binary of its own, for the tests of this crate: they cannot
//! run `flashsale bench ceiling-server` (the `flashsale` binary is another package's), so they
//! start this one through the same [`flashsale_bench::ceiling::CeilingProcess`]. It prints its
//! address and serves until its stdin closes, exactly as the hidden scenario does.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    match flashsale_bench::ceiling::serve().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flashsale-bench-ceiling: {e}");
            ExitCode::FAILURE
        }
    }
}
