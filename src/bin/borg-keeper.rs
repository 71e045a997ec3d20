//! `borg-keeper`: the keeper of each task, exec'd by the borglet (see `borglet::keeper`).
//! Installed beside `borg`, where the borglet looks for it.

fn main() {
    borglet::keeper::main()
}
