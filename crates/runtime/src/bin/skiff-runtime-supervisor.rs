//! Test/bootstrap binary: `skiff-runtime-supervisor supervisor --group-dir DIR`
//! (the same command line as the hidden `skiff supervisor` subcommand).

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = match args
        .iter()
        .position(|a| a == "--group-dir")
        .and_then(|i| args.get(i + 1))
    {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            eprintln!("usage: {} supervisor --group-dir DIR", args[0]);
            std::process::exit(2);
        }
    };
    std::process::exit(skiff_runtime::supervisor_main(&dir));
}
