//! Every BCL example in docs/bcl.md loads, so the reference cannot drift from the language.

use std::path::Path;

/// The ```bcl blocks of the reference, with the line each starts on.
fn bcl_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        match (&mut current, line.trim_end()) {
            (None, "```bcl") => current = Some((i + 1, String::new())),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some((_, body)), _) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// A block that shows several files starts each with a `# NAME.bcl` line.
fn split_files(block: &str) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = Vec::new();
    for line in block.lines() {
        let name = line
            .strip_prefix("# ")
            .filter(|n| n.ends_with(".bcl") && !n.contains(' '));
        match (name, files.last_mut()) {
            (Some(n), _) => files.push((n.to_string(), String::new())),
            (None, Some((_, body))) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => files.push(("main.bcl".into(), format!("{line}\n"))),
        }
    }
    files
}

#[test]
fn every_example_in_the_reference_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/bcl.md");
    let text = std::fs::read_to_string(&path).expect("docs/bcl.md is readable");
    let blocks = bcl_blocks(&text);
    assert!(blocks.len() >= 15, "found {} examples", blocks.len());
    for (line, block) in blocks {
        let dir = tempfile::tempdir().unwrap();
        let files = split_files(&block);
        for (name, body) in &files {
            let file = dir.path().join(name);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, body).unwrap();
        }
        let (last, _) = files.last().expect("a block has text");
        if let Err(d) = bcl::load_file(&dir.path().join(last)) {
            panic!("the example at docs/bcl.md:{line} does not load:\n{d}");
        }
    }
}
