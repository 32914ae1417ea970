"""A verified webhook (or an imported line) becomes an inbox row and is handed on for processing."""
