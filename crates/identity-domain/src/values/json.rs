//! Free-form JSON objects (custom data, public profiles), bounded in depth and text.

use super::*;

/// How deeply objects and arrays may nest inside custom data or a public profile.
pub const MAX_JSON_DEPTH: usize = 16;

fn check_json_object(
    map: &serde_json::Map<String, serde_json::Value>,
    path: &str,
    depth: usize,
) -> Result<(), ValueError> {
    if depth > MAX_JSON_DEPTH {
        return Err(ValueError::new(format!(
            "must nest at most {MAX_JSON_DEPTH} levels deep"
        )));
    }
    for (key, value) in map {
        if key.chars().any(char::is_control) {
            let place = if path.is_empty() {
                "the top level"
            } else {
                path
            };
            return Err(ValueError::new(format!(
                "a key at {place} contains control characters"
            )));
        }
        let here = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        check_json_value(value, &here, depth)?;
    }
    Ok(())
}

fn check_json_value(value: &serde_json::Value, path: &str, depth: usize) -> Result<(), ValueError> {
    match value {
        serde_json::Value::String(s) => {
            if s.chars()
                .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
            {
                return Err(ValueError::new(format!(
                    "{path} must not contain control characters"
                )));
            }
            Ok(())
        }
        serde_json::Value::Object(map) => check_json_object(map, path, depth + 1),
        serde_json::Value::Array(items) => {
            if depth + 1 > MAX_JSON_DEPTH {
                return Err(ValueError::new(format!(
                    "must nest at most {MAX_JSON_DEPTH} levels deep"
                )));
            }
            items
                .iter()
                .enumerate()
                .try_for_each(|(i, v)| check_json_value(v, &format!("{path}[{i}]"), depth + 1))
        }
        serde_json::Value::Null | serde_json::Value::Bool(_) | serde_json::Value::Number(_) => {
            Ok(())
        }
    }
}

/// A JSON object (custom data, public profile) bounded in size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct JsonObject(serde_json::Map<String, serde_json::Value>);

impl JsonObject {
    pub fn parse(raw: &str) -> Result<Self, ValueError> {
        if raw.len() > MAX_JSON_BYTES {
            return Err(ValueError::new(format!(
                "must be at most {MAX_JSON_BYTES} bytes of JSON"
            )));
        }
        match serde_json::from_str::<serde_json::Value>(raw) {
            Ok(serde_json::Value::Object(map)) => Self::from_map(map),
            Ok(_) => Err(ValueError::new("must be a JSON object")),
            Err(e) => Err(ValueError::new(format!("must be valid JSON: {e}"))),
        }
    }

    /// Checks size, depth and text: every key and string is free of control characters
    /// (tab, line feed and carriage return allowed in values), since a NUL cannot be stored
    /// by PostgreSQL's jsonb and the others have no business in profile data.
    pub fn from_map(map: serde_json::Map<String, serde_json::Value>) -> Result<Self, ValueError> {
        check_json_object(&map, "", 1)?;
        let size = serde_json::to_string(&map)
            .map(|s| s.len())
            .unwrap_or(usize::MAX);
        if size > MAX_JSON_BYTES {
            return Err(ValueError::new(format!(
                "must be at most {MAX_JSON_BYTES} bytes of JSON"
            )));
        }
        Ok(Self(map))
    }

    pub fn as_map(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.0
    }

    pub fn to_json_string(&self) -> String {
        serde_json::Value::Object(self.0.clone()).to_string()
    }
}
