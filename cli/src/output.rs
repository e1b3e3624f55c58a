//! Output helpers: JSON on stdout, progress on stderr when it is a terminal.

use std::io::{IsTerminal as _, Write as _};

use indicatif::{ProgressBar, ProgressStyle};

pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// A progress bar for batches, shown only on a terminal and for more than
/// one item; hidden otherwise so pipes and logs stay clean.
pub(crate) fn progress(len: usize, verb: &str) -> ProgressBar {
    if len < 2 || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{verb} {{bar:40}} {{pos}}/{{len}} {{per_sec}} eta {{eta}}"
    )) {
        bar.set_style(style);
    }
    bar
}
