use super::*;

#[test]
fn print_peer() {
    let dir = "/work/main/.peer/llama_cpp_python-0.3.36/vendor/llama.cpp/grammars";
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        if p.extension().is_some_and(|e| e == "gbnf") {
            let src = std::fs::read_to_string(&p).unwrap();
            println!(
                "=== {}\n{}",
                p.display(),
                match gbnf_to_lark(&src) {
                    Ok(s) => s,
                    Err(e) => e.to_string(),
                }
            );
        }
    }
}
