"""caseline's wire contract: the strict codec, wire objects, errors and content schemas."""
