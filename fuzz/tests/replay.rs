//! Replays the committed corpus (seeds/chat_request/) through the fuzz target's code on any
//! toolchain: `cd fuzz && cargo test`. Every input must come back without a panic.

#[test]
fn corpus_replays_without_panics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/chat_request");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        frugal_fuzz::chat_request::exercise(&data);
        n += 1;
    }
    assert!(n >= 5, "only {n} corpus files in {}", dir.display());
}
