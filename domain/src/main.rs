//! The `unseen` binary: parses arguments and prints errors readably.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let level = unseen::logging::level_from(&args);
    let format = match unseen::logging::format_from(&args) {
        Ok(format) => format,
        Err(message) => {
            eprintln!("{message}");
            return std::process::ExitCode::from(2);
        }
    };
    // Colour for people at a terminal, never in a redirected log file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::registry()
        .with(unseen::logging::layer(format, ansi, std::io::stderr))
        .with(unseen::logging::filter(level))
        .init();
    let mut stdout = std::io::stdout().lock();
    match unseen::cli::run(&args, &mut stdout) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let (code, message) = unseen::cli::failure(&e);
            if let Some(message) = message {
                eprintln!("{message}");
            }
            std::process::ExitCode::from(code)
        }
    }
}
