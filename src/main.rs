use clap::Parser;

fn main() {
    let args = provision::cli::Args::parse();
    std::process::exit(provision::cli::main(args));
}
