//! The task keeper program for this crate's tests and benchmarks (`borg-keeper` is the same
//! program installed beside `borg`); see `borglet::keeper`.

fn main() {
    borglet::keeper::main()
}
