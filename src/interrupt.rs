//! Ctrl-C and SIGTERM: the first starts nothing new and stops the commands running on the
//! hosts; the second exits at once. Everything that waits on a host listens here.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::OnceLock;
use tokio::sync::Notify;

/// The exit code of an interrupted run (128 + SIGINT, as shells report it).
pub const EXIT: i32 = 130;

static STOP: AtomicBool = AtomicBool::new(false);
static SIGNALS: AtomicU32 = AtomicU32::new(0);

fn notify() -> &'static Notify {
    static N: OnceLock<Notify> = OnceLock::new();
    N.get_or_init(Notify::new)
}

pub fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Asks everything to stop (also what a signal does).
pub fn request() {
    STOP.store(true, Ordering::SeqCst);
    notify().notify_waiters();
}

/// Resolves once a stop is requested.
pub async fn wait() {
    loop {
        let n = notify().notified();
        if requested() {
            return;
        }
        n.await;
    }
}

/// Installs the handlers (inside the runtime). `say` prints the first notice.
pub fn install(say: fn(&str)) {
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        loop {
            #[cfg(unix)]
            let got = async {
                match term.as_mut() {
                    Some(t) => {
                        tokio::select! {
                            _ = tokio::signal::ctrl_c() => {},
                            _ = t.recv() => {},
                        }
                    }
                    None => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
            };
            #[cfg(not(unix))]
            let got = tokio::signal::ctrl_c();
            let _ = got.await;
            if SIGNALS.fetch_add(1, Ordering::SeqCst) == 0 {
                say("interrupted: starting nothing new and stopping the commands running on the hosts (again to quit at once)");
                request();
            } else {
                say("interrupted again: quitting now; commands may still be running on the hosts");
                std::process::exit(EXIT);
            }
        }
    });
}
