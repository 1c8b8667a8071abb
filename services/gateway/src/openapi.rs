//! Merging API documents: calls-api serves the document of the calls API, notifier the part
//! for the device registry; apps, Swagger UI and client generators read one document at
//! `/api/docs/openapi.json`, so the gateway puts the two together (pure code).

use serde_json::{Map, Value};

/// `base` with `extra`'s paths, component entries (schemas, security schemes, …) and tags
/// added; on a name both define, `base` wins (calls-api owns the shared envelope schemas).
pub fn merge(mut base: Value, extra: Value) -> Value {
    let Value::Object(extra) = extra else {
        return base;
    };
    let Some(doc) = base.as_object_mut() else {
        return base;
    };
    if let Some(Value::Object(paths)) = extra.get("paths") {
        add_missing(object(doc, "paths"), paths);
    }
    if let Some(Value::Object(components)) = extra.get("components") {
        let target = object(doc, "components");
        for (kind, entries) in components {
            if let Value::Object(entries) = entries {
                add_missing(object(target, kind), entries);
            }
        }
    }
    if let Some(Value::Array(tags)) = extra.get("tags") {
        let target = doc
            .entry("tags")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(existing) = target {
            for tag in tags {
                let name = tag.get("name");
                if !existing.iter().any(|t| t.get("name") == name) {
                    existing.push(tag.clone());
                }
            }
        }
    }
    base
}

fn object<'a>(parent: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = parent
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(map) => map,
        // Made an object just above.
        _ => unreachable!(),
    }
}

fn add_missing(target: &mut Map<String, Value>, source: &Map<String, Value>) {
    for (key, value) in source {
        target.entry(key.clone()).or_insert_with(|| value.clone());
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn notifier_paths_schemas_and_tags_join_the_calls_document() {
        let base = json!({
            "openapi": "3.1.0", "info": {"title": "Calls API"},
            "paths": {"/api/v1/calls": {"get": {}}},
            "components": {"schemas": {"Call": {}}, "securitySchemes": {"bearer": {"a": 1}}},
            "tags": [{"name": "calls"}]
        });
        let extra = json!({
            "info": {"title": "devices"},
            "paths": {"/api/v1/devices": {"get": {}}},
            "components": {"schemas": {"Device": {}}, "securitySchemes": {"bearer": {"a": 2}}},
            "tags": [{"name": "devices"}, {"name": "calls"}]
        });
        let merged = merge(base, extra);
        assert_eq!(merged["info"]["title"], "Calls API");
        assert!(merged["paths"]["/api/v1/calls"].is_object());
        assert!(merged["paths"]["/api/v1/devices"].is_object());
        assert!(merged["components"]["schemas"]["Device"].is_object());
        assert_eq!(merged["components"]["securitySchemes"]["bearer"]["a"], 1);
        assert_eq!(
            merged["tags"],
            json!([{"name": "calls"}, {"name": "devices"}])
        );
    }

    #[test]
    fn a_document_that_is_not_an_object_changes_nothing() {
        let base = json!({"paths": {}});
        assert_eq!(merge(base.clone(), json!([1, 2])), base);
    }
}
