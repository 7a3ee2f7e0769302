//! `jfconnect demo`: the whole connected flow once, against the in-process simulator.
//! (Wired to the simulator when it lands.)

/// Runs the demo, writing each step to `out`.
pub async fn run(_out: &mut impl std::io::Write) -> Result<(), String> {
    Err("the demo needs the simulator, which is not built yet".into())
}
