//! Prints what BCL files evaluate to, as JSON, or their diagnostics:
//! `cargo run -p bcl --example inspect -- examples/hello.bcl`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut status = ExitCode::SUCCESS;
    for file in std::env::args().skip(1) {
        match bcl::load_file(std::path::Path::new(&file)) {
            Ok(loaded) => match serde_json::to_string_pretty(&loaded) {
                Ok(json) => println!("{json}"),
                Err(e) => {
                    eprintln!("{file}: cannot render as JSON: {e}");
                    status = ExitCode::FAILURE;
                }
            },
            Err(diagnostics) => {
                eprintln!("{diagnostics}");
                status = ExitCode::FAILURE;
            }
        }
    }
    status
}
