//! `schemagen [--check]`: writes `schemas/json/*.schema.json` and
//! `schemas/examples/**` and `schemas/asyncapi.yaml` from the Rust types; `--check` writes nothing and exits 1
//! with a summary when the checked-in files differ from the generated ones.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;

/// The generated files that are on disk under `dir` (only the folders we own).
fn on_disk(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.join("json"), dir.join("examples")];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "json") {
                out.insert(
                    p.strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .replace('\\', "/"),
                );
            }
        }
    }
    out
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let check = args.iter().any(|a| a == "--check");
    if args.iter().any(|a| a != "--check") {
        eprintln!("usage: schemagen [--check]");
        return ExitCode::from(2);
    }
    let dir = schemagen::schemas_dir();
    let generated = schemagen::generate();
    let existing = on_disk(&dir);
    let mut problems = Vec::new();
    for (path, text) in &generated {
        match std::fs::read_to_string(dir.join(path)) {
            Ok(current) if &current == text => {}
            Ok(current) => {
                let same = current
                    .lines()
                    .zip(text.lines())
                    .take_while(|(a, b)| a == b)
                    .count();
                let changed = same + 1;
                problems.push(format!(
                    "changed: schemas/{path} (first difference at line {changed})"
                ));
            }
            Err(_) => problems.push(format!("missing: schemas/{path}")),
        }
    }
    for path in existing.iter().filter(|p| !generated.contains_key(*p)) {
        problems.push(format!("stale:   schemas/{path} (not generated any more)"));
    }
    if check {
        if problems.is_empty() {
            println!("schemagen: {} files up to date", generated.len());
            return ExitCode::SUCCESS;
        }
        eprintln!("schemagen: the checked-in schemas differ from the Rust types:");
        for p in &problems {
            eprintln!("  {p}");
        }
        eprintln!("run `cargo run -p schemagen` and commit the result");
        return ExitCode::FAILURE;
    }
    for path in existing.iter().filter(|p| !generated.contains_key(*p)) {
        let _ = std::fs::remove_file(dir.join(path));
    }
    for (path, text) in &generated {
        let file = dir.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).expect("create folder");
        std::fs::write(&file, text).expect("write file");
    }
    println!(
        "schemagen: wrote {} files ({} changed)",
        generated.len(),
        problems.len()
    );
    ExitCode::SUCCESS
}
