//! Arbitrary bytes as a chat or completion request body: parsed as the server parses it
//! (`frugal_server::api::parse_body`), its parameters validated, its messages normalized and
//! rendered with several real chat templates (with and without the generic tool prompt), and the
//! bytes also read as a model's generic tool-call answer. Any of these may return an error; none
//! may panic.
#![no_main]

use frugal_fuzz::chat_request::exercise;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| exercise(data));
