//! `borg-keeper`, exec'd by the borglet for every task, is linked statically: see
//! borglet/build/static_keeper.rs.

include!("borglet/build/static_keeper.rs");

fn main() {
    println!("cargo:rerun-if-changed=borglet/build/static_keeper.rs");
    link_keeper_statically("borg-keeper");
}
