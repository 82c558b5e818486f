//! A progress bar for long operator commands, drawn on standard error when it is a terminal
//! (and redrawn at most ten times a second); silent otherwise, so scripts and logs stay clean.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    label: &'static str,
    total: u64,
    done: u64,
    shown: bool,
    last_draw: Option<Instant>,
    started: Instant,
}

const REDRAW: Duration = Duration::from_millis(100);
const WIDTH: u64 = 30;

impl Progress {
    /// Drawn when standard error is a terminal.
    pub fn new(label: &'static str) -> Progress {
        Progress {
            label,
            total: 0,
            done: 0,
            shown: std::io::stderr().is_terminal(),
            last_draw: None,
            started: Instant::now(),
        }
    }

    /// Never drawn.
    pub fn hidden() -> Progress {
        Progress {
            shown: false,
            ..Progress::new("")
        }
    }

    pub fn set_total(&mut self, total: u64) {
        self.total = total;
    }

    pub fn inc(&mut self, n: u64) {
        self.done += n;
        if self.shown && self.last_draw.is_none_or(|t| t.elapsed() >= REDRAW) {
            self.draw();
        }
    }

    pub fn finish(&mut self) {
        if self.shown {
            self.draw();
            eprintln!();
            self.shown = false;
        }
    }

    fn draw(&mut self) {
        self.last_draw = Some(Instant::now());
        eprint!("\r{}", self.line());
        let _ = std::io::stderr().flush();
    }

    fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.done as f64 / secs;
        if self.total == 0 {
            return format!("{} {} ({rate:.0}/s)", self.label, self.done);
        }
        let done = self.done.min(self.total);
        let filled = done * WIDTH / self.total;
        format!(
            "{} [{}{}] {}/{} ({:.0}%, {rate:.0}/s)",
            self.label,
            "#".repeat(filled as usize),
            " ".repeat((WIDTH - filled) as usize),
            self.done,
            self.total,
            done as f64 * 100.0 / self.total as f64
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_with_progress() {
        let mut p = Progress::hidden();
        p.label = "export";
        p.set_total(4);
        p.inc(2);
        let l = p.line();
        assert!(
            l.starts_with("export [###############               ] 2/4 (50%"),
            "{l}"
        );
        p.inc(10); // more than announced: the bar stays full
        assert!(p.line().contains(&format!("[{}]", "#".repeat(30))));
        p.set_total(0);
        assert!(p.line().starts_with("export 12 ("));
    }
}
