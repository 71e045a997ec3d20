//! Inputs that once crashed the loader (from cargo-fuzz, kept in tests/regressions/), and a
//! deterministic, seeded byte-mutation run over the examples that runs on every `cargo test`.
//! Both assert only that loading returns (Ok or Diagnostics) without panicking.

use std::path::{Path, PathBuf};

/// Stack of the threads calling the loader here: small, to show that the loader's depth
/// does not depend on its caller's stack (it runs on a thread of its own).
const CALLER_STACK_BYTES: usize = 256 * 1024;
/// Mutated inputs tried per run.
const MUTATION_ITERATIONS: usize = 3000;
/// Byte edits applied to each mutated input, at most.
const EDITS_PER_INPUT_MAX: u64 = 8;

fn load_on_small_stack(text: String, name: String) {
    let handle = std::thread::Builder::new()
        .stack_size(CALLER_STACK_BYTES)
        .spawn(move || {
            let _ = bcl::load_str(&text, &name);
        })
        .expect("spawn loader thread");
    if handle.join().is_err() {
        panic!("the loader panicked");
    }
}

fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    out.retain(|p| p.extension().is_some_and(|e| e == ext));
    out.sort();
    out
}

#[test]
fn kept_crashing_inputs_load_without_panicking() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regressions");
    let files = files_with_ext(&dir, "bcl");
    assert!(
        !files.is_empty(),
        "tests/regressions holds the fuzzer's finds"
    );
    for file in files {
        let bytes = std::fs::read(&file).expect("regression file is readable");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        // Named inside the regressions dir so that relative imports resolve there only.
        let result =
            std::panic::catch_unwind(|| load_on_small_stack(text, file.display().to_string()));
        assert!(result.is_ok(), "{} makes the loader panic", file.display());
    }
}

/// xorshift64*: a fixed seed makes every run try the same inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes worth inserting: the language's punctuation and a few words and units.
const DICTIONARY: [&[u8]; 20] = [
    b"{",
    b"}",
    b"[",
    b"]",
    b"(",
    b")",
    b"'",
    b"=",
    b" + ",
    b" * ",
    b"if true then ",
    b" else ",
    b"job x = ",
    b"import 'x.bcl'",
    b"500m",
    b"1.5Gi",
    b"%task_index%",
    b"/*",
    b"\\",
    b"\n",
];

#[test]
fn seeded_mutations_of_the_examples_never_panic() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let seeds: Vec<Vec<u8>> = files_with_ext(&examples, "bcl")
        .iter()
        .chain(files_with_ext(&examples.join("lib"), "bcl").iter())
        .map(|p| std::fs::read(p).expect("example is readable"))
        .collect();
    assert!(!seeds.is_empty());
    let mut rng = Rng(0x5eed_b0c1_2026_0001);
    let mut inputs = Vec::with_capacity(MUTATION_ITERATIONS);
    for _ in 0..MUTATION_ITERATIONS {
        let mut bytes = seeds[rng.below(seeds.len())].clone();
        for _ in 0..=rng.next() % EDITS_PER_INPUT_MAX {
            let at = rng.below(bytes.len() + 1);
            match rng.next() % 5 {
                0 if at < bytes.len() => {
                    bytes.remove(at);
                }
                1 if at < bytes.len() => bytes[at] = rng.next() as u8,
                2 => bytes
                    .splice(
                        at..at,
                        DICTIONARY[rng.below(DICTIONARY.len())].iter().copied(),
                    )
                    .for_each(drop),
                3 if at < bytes.len() => {
                    // Duplicate a slice: repeats nesting and definitions.
                    let end = (at + rng.below(64)).min(bytes.len());
                    let copy = bytes[at..end].to_vec();
                    bytes.splice(at..at, copy).for_each(drop);
                }
                _ => bytes.truncate(at),
            }
        }
        inputs.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    let examples_name = examples.join("mutated.bcl").display().to_string();
    let handle = std::thread::Builder::new()
        .stack_size(CALLER_STACK_BYTES)
        .spawn(move || {
            let mut loaded = 0;
            for text in &inputs {
                if bcl::load_str(text, &examples_name).is_ok() {
                    loaded += 1;
                }
            }
            loaded
        })
        .expect("spawn loader thread");
    let loaded = handle
        .join()
        .expect("the loader panicked on a mutated example");
    // Some mutations (in comments, say) keep the file valid: the run exercised both paths.
    assert!(
        loaded > 0 && loaded < MUTATION_ITERATIONS,
        "{loaded} of {MUTATION_ITERATIONS} loaded"
    );
}
