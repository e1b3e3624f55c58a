//! The `marque` command: thin glue between the command line and the
//! `marque-keys` and `marque-verifier` libraries.
//!
//! Exit codes: 0 ok or verified, 1 verification failed, 2 usage or
//! operational error.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod args;
mod cmd;
mod output;
mod password;

use std::process::ExitCode;

use clap::Parser as _;

/// What a command concluded, mapped to the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Everything succeeded or verified.
    Ok,
    /// At least one image failed verification.
    Failed,
    /// At least one operation could not be carried out.
    Error,
}

impl Status {
    fn code(self) -> ExitCode {
        match self {
            Status::Ok => ExitCode::SUCCESS,
            Status::Failed => ExitCode::from(1),
            Status::Error => ExitCode::from(2),
        }
    }

    /// The worse of two: an operational error outranks a failed check,
    /// because the answer for that image is unknown.
    pub(crate) fn worst(self, other: Status) -> Status {
        match (self, other) {
            (Status::Error, _) | (_, Status::Error) => Status::Error,
            (Status::Failed, _) | (_, Status::Failed) => Status::Failed,
            _ => Status::Ok,
        }
    }
}

fn main() -> ExitCode {
    let cli = args::Cli::parse_from(containerd_flags(std::env::args_os().collect()));
    init_logging(cli.verbose);
    // Commands use one thread; services as many as they ask for.
    let mut builder = match cli.command.worker_threads() {
        Some(n) if n > 1 => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("marque: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(cmd::run(cli.command)) {
        Ok(status) => status.code(),
        Err(e) => {
            eprintln!("marque: {}", error_chain(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes on one line, as `{:#}` prints them, but
/// without a cause whose text the message before it already carries
/// (several error types put their source in their own message).
fn error_chain(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.is_empty() {
            line = text;
        } else if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("MARQUE_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// containerd runs image verifiers with single-dash long flags (`-name`,
/// `-digest`, `-stdin-media-type`); for `node verify-image` they are read
/// as the usual double-dash ones.
fn containerd_flags(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let is_verifier = args.get(1).is_some_and(|a| a == "node")
        && args.get(2).is_some_and(|a| a == "verify-image");
    if is_verifier {
        for a in args.iter_mut().skip(3) {
            if let Some(flag) = a.to_str().and_then(|s| {
                ["-name", "-digest", "-stdin-media-type"]
                    .into_iter()
                    .find(|f| s == *f || s.starts_with(&format!("{f}=")))
                    .map(|_| format!("-{s}"))
            }) {
                *a = flag.into();
            }
        }
    }
    args
}

#[cfg(test)]
mod tests {
    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(std::io::Error::other(format!("a.json: {io}")))
            .context("reading the state");
        assert_eq!(
            super::error_chain(&e),
            "reading the state: a.json: no such file"
        );
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(super::error_chain(&e), "outer: inner");
    }
}
