//! The `borglet-keeper` binary (tests and benchmarks) is linked statically: see
//! build/static_keeper.rs.

include!("build/static_keeper.rs");

fn main() {
    println!("cargo:rerun-if-changed=build/static_keeper.rs");
    link_keeper_statically("borglet-keeper");
}
