//! A response's output items, built from the chat parser's deltas: reasoning, message and
//! function-call items in the order the model wrote them, and the stream events that announce,
//! fill and close each one. The plain response is built the same way (its events dropped), so a
//! streamed response assembles to exactly the plain one.

use frugal_output::OutputDelta;
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Reasoning,
    Message,
    /// Tool call number `usize` of the answer.
    Call(usize),
}

/// The output items so far, and the one being written.
pub struct Items {
    items: Vec<Value>,
    kinds: Vec<Kind>,
    open: Option<usize>,
    /// Makes item ids: a fresh unique suffix per call.
    new_id: fn() -> String,
}

impl Items {
    pub fn new(new_id: fn() -> String) -> Items {
        Items {
            items: Vec::new(),
            kinds: Vec::new(),
            open: None,
            new_id,
        }
    }

    pub fn output(&self) -> &[Value] {
        &self.items
    }

    /// The events for more of the answer.
    pub fn push(&mut self, deltas: Vec<OutputDelta>) -> Vec<Value> {
        let mut events = Vec::new();
        for d in deltas {
            match d {
                OutputDelta::Reasoning(t) => self.text(Kind::Reasoning, t, &mut events),
                OutputDelta::Content(t) => self.text(Kind::Message, t, &mut events),
                OutputDelta::ToolCallStart { index, id, name } => {
                    self.close(&mut events, "completed");
                    let item = json!({"id": format!("fc_{}", (self.new_id)()), "type": "function_call",
                        "status": "in_progress", "call_id": id, "name": name, "arguments": ""});
                    self.open(Kind::Call(index), item, &mut events);
                }
                OutputDelta::ToolCallArguments { index, arguments } => {
                    self.arguments(index, arguments, &mut events)
                }
            }
        }
        events
    }

    /// The closing events: the open item closed (`incomplete` when the length limit `cut` the
    /// answer), and an empty message when the model wrote neither text nor calls, so every
    /// response has an answer to read.
    pub fn finish(&mut self, cut: bool) -> Vec<Value> {
        let status = if cut { "incomplete" } else { "completed" };
        let mut events = Vec::new();
        self.close(&mut events, status);
        if !self.kinds.iter().any(|k| *k != Kind::Reasoning) {
            self.open(Kind::Message, self.message(), &mut events);
            self.close(&mut events, status);
        }
        events
    }

    fn message(&self) -> Value {
        json!({"id": format!("msg_{}", (self.new_id)()), "type": "message", "status": "in_progress",
            "role": "assistant", "content": [{"type": "output_text", "text": "", "annotations": [],
            "logprobs": []}]})
    }

    /// Reasoning or message text, in the open item of that kind or a new one.
    fn text(&mut self, kind: Kind, text: String, events: &mut Vec<Value>) {
        if text.is_empty() {
            return;
        }
        if self.open.map(|i| self.kinds[i]) != Some(kind) {
            self.close(events, "completed");
            let item = match kind {
                Kind::Reasoning => {
                    json!({"id": format!("rs_{}", (self.new_id)()), "type": "reasoning",
                    "summary": [], "content": [{"type": "reasoning_text", "text": ""}]})
                }
                _ => self.message(),
            };
            self.open(kind, item, events);
        }
        let i = self.open.expect("opened above");
        append(&mut self.items[i]["content"][0]["text"], &text);
        let name = match kind {
            Kind::Reasoning => "response.reasoning_text.delta",
            _ => "response.output_text.delta",
        };
        let mut e = self.part_event(name, i);
        e["delta"] = json!(text);
        if kind == Kind::Message {
            e["logprobs"] = json!([]);
        }
        events.push(e);
    }

    fn arguments(&mut self, index: usize, arguments: String, events: &mut Vec<Value>) {
        let Some(i) = self.kinds.iter().position(|k| *k == Kind::Call(index)) else {
            return;
        };
        if arguments.is_empty() {
            return;
        }
        append(&mut self.items[i]["arguments"], &arguments);
        events.push(json!({"type": "response.function_call_arguments.delta",
            "item_id": self.items[i]["id"], "output_index": i, "delta": arguments}));
    }

    /// Adds an item and announces it (a message or reasoning item without its one content part,
    /// then the part).
    fn open(&mut self, kind: Kind, item: Value, events: &mut Vec<Value>) {
        let i = self.items.len();
        let mut announced = item.clone();
        if !matches!(kind, Kind::Call(_)) {
            announced["content"] = json!([]);
        }
        events.push(
            json!({"type": "response.output_item.added", "output_index": i, "item": announced}),
        );
        if !matches!(kind, Kind::Call(_)) {
            let mut e = self.part_event_for(&item, "response.content_part.added", i);
            e["part"] = item["content"][0].clone();
            events.push(e);
        }
        self.items.push(item);
        self.kinds.push(kind);
        self.open = Some(i);
    }

    /// Closes the open item, if any, with `status`.
    fn close(&mut self, events: &mut Vec<Value>, status: &str) {
        let Some(i) = self.open.take() else {
            return;
        };
        match self.kinds[i] {
            Kind::Reasoning | Kind::Message => {
                let part = self.items[i]["content"][0].clone();
                let name = if self.kinds[i] == Kind::Reasoning {
                    "response.reasoning_text.done"
                } else {
                    self.items[i]["status"] = json!(status);
                    "response.output_text.done"
                };
                let mut e = self.part_event(name, i);
                e["text"] = part["text"].clone();
                if self.kinds[i] == Kind::Message {
                    e["logprobs"] = json!([]);
                }
                events.push(e);
                let mut e = self.part_event("response.content_part.done", i);
                e["part"] = part;
                events.push(e);
            }
            Kind::Call(_) => {
                self.items[i]["status"] = json!(status);
                let item = &self.items[i];
                events.push(json!({"type": "response.function_call_arguments.done",
                    "item_id": item["id"], "output_index": i, "name": item["name"],
                    "arguments": item["arguments"]}));
            }
        }
        events.push(
            json!({"type": "response.output_item.done", "output_index": i,
            "item": self.items[i]}),
        );
    }

    fn part_event(&self, name: &str, i: usize) -> Value {
        self.part_event_for(&self.items[i], name, i)
    }

    fn part_event_for(&self, item: &Value, name: &str, i: usize) -> Value {
        json!({"type": name, "item_id": item["id"], "output_index": i, "content_index": 0})
    }
}

fn append(into: &mut Value, more: &str) {
    if let Value::String(s) = into {
        s.push_str(more);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> String {
        "x".into()
    }

    fn names(events: &[Value]) -> Vec<&str> {
        events.iter().map(|e| e["type"].as_str().unwrap()).collect()
    }

    #[test]
    fn reasoning_text_and_calls_become_items_in_order() {
        let mut items = Items::new(id);
        let mut events = items.push(vec![
            OutputDelta::Reasoning("hm".into()),
            OutputDelta::Reasoning("m".into()),
            OutputDelta::Content("Hi".into()),
        ]);
        events.extend(items.push(vec![
            OutputDelta::ToolCallStart {
                index: 0,
                id: "call_1".into(),
                name: "f".into(),
            },
            OutputDelta::ToolCallArguments {
                index: 0,
                arguments: "{}".into(),
            },
        ]));
        events.extend(items.finish(false));
        assert_eq!(
            names(&events),
            [
                "response.output_item.added",
                "response.content_part.added",
                "response.reasoning_text.delta",
                "response.reasoning_text.delta",
                "response.reasoning_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
            ]
        );
        let out = items.output();
        assert_eq!(
            out[0],
            json!({"id": "rs_x", "type": "reasoning", "summary": [],
                   "content": [{"type": "reasoning_text", "text": "hmm"}]})
        );
        assert_eq!(out[1]["status"], "completed");
        assert_eq!(out[1]["content"][0]["text"], "Hi");
        assert_eq!(
            out[2],
            json!({"id": "fc_x", "type": "function_call", "status": "completed",
                   "call_id": "call_1", "name": "f", "arguments": "{}"})
        );
        // Announced without content; the part comes in its own event.
        assert_eq!(events[7]["item"]["content"], json!([]));
        assert_eq!(events[7]["output_index"], 1);
        assert_eq!(events[10]["text"], "Hi");
    }

    #[test]
    fn an_answer_cut_in_its_reasoning_still_has_an_incomplete_message() {
        let mut items = Items::new(id);
        items.push(vec![OutputDelta::Reasoning("so".into())]);
        let events = items.finish(true);
        assert_eq!(events.len(), 3 + 5);
        let out = items.output();
        assert_eq!(out.len(), 2);
        assert_eq!(out[1]["type"], "message");
        assert_eq!(out[1]["status"], "incomplete");
        assert_eq!(out[1]["content"][0]["text"], "");
    }
}
