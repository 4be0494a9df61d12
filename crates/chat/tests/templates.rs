//! Every template × conversation in ../shared/fixtures/templates must render byte for byte as
//! transformers' `apply_chat_template` did.

use frugal_chat::ChatTemplate;
use frugal_fixtures::dir as fixtures;
use serde_json::{Map, Value};
use std::path::PathBuf;

fn read_json(p: PathBuf) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn fixture_renderings_match() {
    let dir = fixtures().join("templates");
    let convs = read_json(dir.join("conversations.json"));
    let mut checked = 0;
    let mut failures = Vec::new();
    for entry in std::fs::read_dir(dir.join("expected")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let exp = read_json(path);
        let name = exp["template"].as_str().unwrap();
        let source = std::fs::read_to_string(dir.join(name)).unwrap();
        let st = &exp["special_tokens"];
        let tmpl = ChatTemplate::new(
            &source,
            st["bos_token"].as_str(),
            st["eos_token"].as_str(),
            st["pad_token"].as_str(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        for (case, want) in exp["cases"].as_object().unwrap() {
            let c = &convs["conversations"][case];
            let tools = c["tools"].as_array().map(|t| t.as_slice());
            let got = tmpl.render(
                c["messages"].as_array().unwrap(),
                tools,
                c["add_generation_prompt"].as_bool().unwrap(),
                &Map::new(),
            );
            checked += 1;
            match got {
                Ok(g) if g == want.as_str().unwrap() => {}
                Ok(g) => failures.push(format!(
                    "{name} {case}:\n--- got\n{g}\n--- want\n{}",
                    want.as_str().unwrap()
                )),
                Err(e) => failures.push(format!("{name} {case}: {e}")),
            }
        }
    }
    eprintln!("{} / {checked} renderings match", checked - failures.len());
    assert!(checked >= 19, "only {checked} renderings found");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn chatml_fallback() {
    let t = ChatTemplate::chatml();
    let msgs = vec![
        serde_json::json!({"role": "system", "content": "Be brief."}),
        serde_json::json!({"role": "user", "content": [{"type": "text", "text": "Hi"}]}),
    ];
    let out = t.render(&msgs, None, true, &Map::new()).unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn raise_exception_is_an_error() {
    let t = ChatTemplate::new(
        "{{ raise_exception('roles must alternate') }}",
        None,
        None,
        None,
    )
    .unwrap();
    let err = t
        .render(&[], None, true, &Map::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("roles must alternate"), "{err}");
    assert!(ChatTemplate::new("{% if %}", None, None, None).is_err());
}

#[test]
fn extra_variables_reach_the_template() {
    let t =
        ChatTemplate::new("{{ 'on' if enable_thinking else 'off' }}", None, None, None).unwrap();
    let mut extra = Map::new();
    extra.insert("enable_thinking".into(), Value::Bool(false));
    assert_eq!(t.render(&[], None, false, &extra).unwrap(), "off");
}

/// Values print as Python's `str()` prints them (the expected text is Jinja2's).
#[test]
fn values_print_as_python_does() {
    let t = ChatTemplate::new(
        "{{ v }}|{{ v|string }}|{{ f }}|{{ g|string }}|{{ v[1] }}|{{ u|string }}|",
        None,
        None,
        None,
    )
    .unwrap();
    let mut extra = Map::new();
    extra.insert(
        "v".into(),
        serde_json::json!([1, "it's", 1e-05, null, {"k": true}]),
    );
    extra.insert("f".into(), serde_json::json!(1e16));
    extra.insert("g".into(), serde_json::json!(0.1));
    assert_eq!(
        t.render(&[], None, false, &extra).unwrap(),
        r#"[1, "it's", 1e-05, None, {'k': True}]|[1, "it's", 1e-05, None, {'k': True}]|1e+16|0.1|it's||"#
    );
}

/// Jinja2's `iterable` and `sequence` tests (the expected text is Jinja2's): `None` is not
/// iterable (Qwen3-Coder's `tools is iterable and tools | length > 0` with no tools), strings
/// and dicts are sequences, undefined is both.
#[test]
fn iterable_and_sequence_tests_as_jinja2() {
    let t = ChatTemplate::new(
        "{{ n is iterable }} {{ [] is iterable }} {{ 'a' is iterable }} {{ {} is iterable }} \
         {{ 3 is iterable }} {{ x is iterable }}|{{ {} is sequence }} {{ 'a' is sequence }} \
         {{ n is sequence }} {{ 3 is sequence }} {{ [] is sequence }} {{ x is sequence }}",
        None,
        None,
        None,
    )
    .unwrap();
    let mut extra = Map::new();
    extra.insert("n".into(), Value::Null);
    assert_eq!(
        t.render(&[], None, false, &extra).unwrap(),
        "False True True True False True|True True False False True True"
    );
}

fn render_text(source: &str) -> String {
    ChatTemplate::new(source, None, None, None)
        .unwrap()
        .render(&[], None, false, &Map::new())
        .unwrap()
}

/// transformers' `tojson(ensure_ascii=...)` (GLM's templates pass it): the expected text is
/// Python's `json.dumps`.
#[test]
fn tojson_ensure_ascii_as_python() {
    assert_eq!(
        render_text(
            r#"{{ {"k": "é😀"} | tojson(ensure_ascii=True) }}|{{ "é" | tojson(ensure_ascii=False) }}"#
        ),
        r#"{"k": "\u00e9\ud83d\ude00"}|"é""#
    );
}

/// Lists in a namespace change in place, as Kimi K2's tool-call id queue needs (the expected
/// text is Jinja2's).
#[test]
fn namespace_lists_append_and_pop() {
    let src = "{% set ns = namespace(q=[], n=0) %}{% set _ = ns.q.append(1) %}\
               {% set _ = ns.q.append('a') %}{% set _ = ns.q.append(3) %}\
               {{ ns.q.pop(0) }}{{ ns.q.pop() }}{{ ns.q | length }}{{ ns.q }}\
               {% if ns.q %}y{% endif %}{{ ns.q[-1] }}{% set _ = ns.q.pop() %}{% if not ns.q %}e{% endif %}";
    assert_eq!(render_text(src), "131['a']yae");
    // The rest of a list's behaviour is unchanged (the expected text is Jinja2's).
    let src = "{% set ns = namespace(q=[1, 2]) %}{% set ns.q = ns.q + [3] %}{{ ns.q }}|\
               {{ ns.q | join(',') }}|{% for x in ns.q %}{{ x }}{% endfor %}|{{ 2 in ns.q }}|\
               {{ ns.q[1:] }}|{{ ns.q | tojson }}|{{ ns.q | last }}|{{ ns.q | length }}";
    assert_eq!(
        render_text(src),
        "[1, 2, 3]|1,2,3|123|True|[2, 3]|[1, 2, 3]|3|3"
    );
    let err = ChatTemplate::new(
        "{% set ns = namespace(q=[]) %}{{ ns.q.pop() }}",
        None,
        None,
        None,
    )
    .unwrap()
    .render(&[], None, false, &Map::new());
    assert!(err.is_err());
}
