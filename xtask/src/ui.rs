//! Progress reporting: indicatif bars and spinners on a TTY, plain timestamped
//! lines otherwise (pipes, CI). Under GitHub Actions stages are also folded
//! with `::group::`.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct Ui {
    tty: bool,
    github: bool,
    start: Instant,
}

pub struct Stage {
    ui: Ui,
    name: String,
    start: Instant,
    bar: Option<ProgressBar>,
    done: bool,
}

impl Ui {
    pub fn new() -> Ui {
        let github = std::env::var("GITHUB_ACTIONS").as_deref() == Ok("true");
        let tty = std::io::stderr().is_terminal()
            && std::env::var_os("CI").is_none()
            && !github
            && std::env::var("TERM").as_deref() != Ok("dumb");
        Ui {
            tty,
            github,
            start: Instant::now(),
        }
    }

    pub fn is_tty(&self) -> bool {
        self.tty
    }

    fn stamp(&self) -> String {
        let e = self.start.elapsed().as_secs_f64();
        format!("[{:>7.1}s]", e)
    }

    /// A one-off message.
    pub fn info(&self, msg: impl AsRef<str>) {
        eprintln!("{} {}", self.stamp(), msg.as_ref());
    }

    pub fn warn(&self, msg: impl AsRef<str>) {
        eprintln!("{} warning: {}", self.stamp(), msg.as_ref());
        if self.github {
            println!("::warning::{}", msg.as_ref().replace('\n', "%0A"));
        }
    }

    /// Start a stage: a spinner on a TTY, a line otherwise.
    pub fn stage(&self, name: &str, what: impl AsRef<str>) -> Stage {
        if self.github {
            println!("::group::{name}: {}", what.as_ref());
        }
        let bar = if self.tty {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} {prefix:>8} {msg} [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.set_prefix(name.to_string());
            b.set_message(what.as_ref().to_string());
            b.enable_steady_tick(Duration::from_millis(120));
            Some(b)
        } else {
            eprintln!("{} {name}: {}", self.stamp(), what.as_ref());
            None
        };
        Stage {
            ui: self.clone(),
            name: name.to_string(),
            start: Instant::now(),
            bar,
            done: false,
        }
    }
}

impl Default for Ui {
    fn default() -> Self {
        Ui::new()
    }
}

impl Stage {
    /// Switch to a determinate bar (bytes or items).
    pub fn set_length(&self, len: u64, bytes: bool) {
        if let Some(b) = &self.bar {
            let t = if bytes {
                "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {msg} ({eta})"
            } else {
                "{prefix:>8} [{bar:30}] {pos}/{len} {msg} [{elapsed}]"
            };
            if let Ok(s) = ProgressStyle::with_template(t) {
                b.set_style(s.progress_chars("=> "));
            }
            b.set_length(len);
        }
    }

    pub fn set_position(&self, pos: u64) {
        if let Some(b) = &self.bar {
            b.set_position(pos);
        }
    }

    /// Progress note: updates the spinner, or prints a line when not a TTY.
    pub fn note(&self, msg: impl AsRef<str>) {
        match &self.bar {
            Some(b) => b.set_message(msg.as_ref().to_string()),
            None => eprintln!("{} {}: {}", self.ui.stamp(), self.name, msg.as_ref()),
        }
    }

    pub fn finish(mut self, msg: impl AsRef<str>) -> Duration {
        self.end(msg.as_ref());
        self.start.elapsed()
    }

    fn end(&mut self, msg: &str) {
        if self.done {
            return;
        }
        self.done = true;
        let line = format!(
            "{} {}: {} ({:.1}s)",
            self.ui.stamp(),
            self.name,
            msg,
            self.start.elapsed().as_secs_f64()
        );
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        eprintln!("{line}");
        if self.ui.github {
            println!("::endgroup::");
        }
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        if !self.done {
            self.end("aborted");
        }
    }
}
