"""The grammar of the .rrr language (rrr.lark), shipped as package data of rrrdsl."""
