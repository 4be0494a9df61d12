pub mod bench;
pub mod chat_input;
pub mod info;
pub mod logits;
pub mod membw;
pub mod run;
pub mod serve;
pub mod tokenize;
