"""The operator and QA console, `serialine console` (docs/console.md)."""
