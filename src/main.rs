use clap::Parser;

fn main() {
    let args = match provision::cli::Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => provision::cli::exit::OK,
                // Bad command-line input is invalid input, as a bad inventory is.
                _ => provision::cli::exit::INVALID,
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    std::process::exit(provision::cli::main(args));
}
