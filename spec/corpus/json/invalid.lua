-- Invalid records for json_spec.lua: each `line` is one input line (no
-- newline) that is not exactly one RFC 8259 JSON object, with the error
-- moonwait must give for it: "malformed JSON at byte AT: WHAT" (AT is
-- 1-based). Lines with bytes that are not UTF-8 or with NUL bytes use Lua
-- escapes ("\0", "\xff"); lines with JSON backslash escapes use [[...]].
--
-- The classes follow the public conformance suites (JSONTestSuite's n_*
-- files): numbers, literals, structure, strings and escapes, UTF-8, NUL and
-- control bytes, the BOM, depth, and records that are not objects.

local deep_arrays = '{"v":' .. ("["):rep(1000) .. ("]"):rep(1000) .. "}"
local deep_objects = ('{"a":'):rep(1001) .. "1" .. ("}"):rep(1001)
local huge_int = '{"v":1' .. ("0"):rep(400) .. "}"

local LIT = "invalid literal (JSON has true, false and null; not NaN or Infinity)"
local NOT_OBJ = "a record must be a JSON object ({...})"
local EOL = "the end of the line (one JSON value per line)"
local HIGH = [[a high surrogate escape must be followed by a low one (\uDC00-\uDFFF)]]
local LOW = [[a lone low surrogate escape (\uDC00-\uDFFF) is not a character]]
local HEX4 = [[a \u escape needs 4 hex digits]]

return {
  -- numbers
  { name = "leading zero", line = '{"v":01}', at = 6, what = "invalid number: leading zero" },
  { name = "leading zeros", line = '{"v":00}', at = 6, what = "invalid number: leading zero" },
  { name = "negative leading zero", line = '{"v":-01}', at = 6, what = "invalid number: leading zero" },
  { name = "leading zero with fraction", line = '{"v":-00.5}', at = 6, what = "invalid number: leading zero" },
  { name = "leading plus", line = '{"v":+1}', at = 6, what = "invalid number: a leading '+' is not allowed" },
  { name = "no digit after dot", line = '{"v":1.}', at = 8, what = "invalid number: a digit must follow '.'" },
  { name = "zero dot", line = '{"v":0.}', at = 8, what = "invalid number: a digit must follow '.'" },
  { name = "dot before exponent", line = '{"v":1.e5}', at = 8, what = "invalid number: a digit must follow '.'" },
  { name = "no digit before dot", line = '{"v":.5}', at = 6, what = "invalid number: a digit must come before '.'" },
  { name = "lone minus", line = '{"v":-}', at = 7, what = "invalid number: a digit must follow '-'" },
  { name = "double minus", line = '{"v":--1}', at = 7, what = "invalid number: a digit must follow '-'" },
  { name = "minus Infinity", line = '{"v":-Infinity}', at = 7, what = "invalid number: a digit must follow '-'" },
  { name = "empty exponent", line = '{"v":1e}', at = 8, what = "invalid number: a digit must follow the exponent" },
  { name = "signed empty exponent", line = '{"v":1E+}', at = 9, what = "invalid number: a digit must follow the exponent" },
  { name = "hex number", line = '{"v":0x1F}', at = 7, what = "invalid number" },
  { name = "two dots", line = '{"v":1.5.3}', at = 9, what = "invalid number" },
  { name = "fractional exponent", line = '{"v":1e5.5}', at = 9, what = "invalid number" },
  { name = "digit separator", line = '{"v":1_000}', at = 7, what = "invalid number" },
  { name = "number with a letter", line = '{"v":1x}', at = 7, what = "invalid number" },
  { name = "number overflow", line = '{"v":1e309}', at = 6, what = "number out of range (beyond a double's largest value)" },
  { name = "negative overflow", line = '{"v":-1e400}', at = 6, what = "number out of range (beyond a double's largest value)" },
  { name = "just above the largest double", line = '{"v":1.7976931348623159e308}', at = 6, what = "number out of range (beyond a double's largest value)" },
  { name = "401-digit integer", line = huge_int, at = 6, what = "number out of range (beyond a double's largest value)" },

  -- literals
  { name = "NaN", line = '{"v":NaN}', at = 6, what = LIT },
  { name = "Infinity", line = '{"v":Infinity}', at = 6, what = LIT },
  { name = "lowercase nan", line = '{"v":nan}', at = 6, what = LIT },
  { name = "truncated true", line = '{"v":tru}', at = 6, what = LIT },
  { name = "truncated null", line = '{"v":nul}', at = 6, what = LIT },
  { name = "literal with a tail", line = '{"v":nulll}', at = 6, what = LIT },
  { name = "literal glued to letters", line = '{"v":truex}', at = 6, what = LIT },
  { name = "capitalised True", line = '{"v":True}', at = 6, what = "'T' where a value was expected" },
  { name = "undefined", line = '{"v":undefined}', at = 6, what = "'u' where a value was expected" },

  -- structure
  { name = "trailing comma in object", line = '{"v":1,}', at = 8, what = "'}' where a string key was expected" },
  { name = "trailing comma in array", line = '{"v":[1,]}', at = 9, what = "']' where a value was expected" },
  { name = "leading comma in array", line = '{"v":[,1]}', at = 7, what = "',' where a value was expected" },
  { name = "double comma", line = '{"v":1,,"w":2}', at = 8, what = "',' where a string key was expected" },
  { name = "missing comma", line = '{"v":1 "w":2}', at = 8, what = "'\"' where ',' or '}' was expected" },
  { name = "junk after a value", line = '{"v":1 x}', at = 8, what = "'x' where ',' or '}' was expected" },
  { name = "missing comma in array", line = '{"v":[1 2]}', at = 9, what = "'2' where ',' or ']' was expected" },
  { name = "missing colon", line = '{"v" 1}', at = 6, what = "'1' where ':' was expected" },
  { name = "missing value", line = '{"v":}', at = 6, what = "'}' where a value was expected" },
  { name = "unquoted key", line = '{v:1}', at = 2, what = "'v' where a string key was expected" },
  { name = "single-quoted key", line = "{'v':1}", at = 2, what = "''' where a string key was expected" },
  { name = "single-quoted value", line = "{\"v\":'x'}", at = 6, what = "''' where a value was expected" },
  { name = "block comment", line = '{"v":1/*c*/}', at = 7, what = "'/' where ',' or '}' was expected" },
  { name = "line comment after", line = '{"v":1}//c', at = 8, what = "'/' where " .. EOL .. " was expected" },
  { name = "comment before", line = '/*c*/{"v":1}', at = 1, what = "'/' where a JSON object was expected" },
  { name = "unterminated object", line = '{"v":1', at = 6, what = "the line ends where ',' or '}' was expected" },
  { name = "lone open brace", line = '{', at = 1, what = "the line ends where a string key was expected" },
  { name = "unterminated nested object", line = '{"v":{"w":[]', at = 12, what = "the line ends where ',' or '}' was expected" },
  { name = "unterminated array", line = '{"v":[1,2', at = 9, what = "the line ends where ',' or ']' was expected" },
  { name = "open array", line = '{"v":[', at = 6, what = "the line ends where a value was expected" },
  { name = "mismatched bracket", line = '{"v":[1}', at = 8, what = "'}' where ',' or ']' was expected" },
  { name = "two objects", line = '{"v":1}{"w":2}', at = 8, what = "'{' where " .. EOL .. " was expected" },
  { name = "junk after the object", line = '{"v":1} x', at = 9, what = "'x' where " .. EOL .. " was expected" },
  { name = "comma after the object", line = '{"v":1},', at = 8, what = "',' where " .. EOL .. " was expected" },
  { name = "extra close bracket", line = '{"v":1}]', at = 8, what = "']' where " .. EOL .. " was expected" },
  { name = "1000 nested arrays in a record (depth 1001)", line = deep_arrays, at = 1005, what = "nesting deeper than 1000 levels" },
  { name = "1001 nested objects", line = deep_objects, at = 5001, what = "nesting deeper than 1000 levels" },

  -- records that are not objects
  { name = "top-level empty array", line = "[]", at = 1, what = NOT_OBJ },
  { name = "top-level array of a record", line = '[{"v":1}]', at = 1, what = NOT_OBJ },
  { name = "top-level number", line = "1", at = 1, what = NOT_OBJ },
  { name = "top-level negative number", line = "-1", at = 1, what = NOT_OBJ },
  { name = "top-level string", line = '"s"', at = 1, what = NOT_OBJ },
  { name = "top-level true", line = "true", at = 1, what = NOT_OBJ },
  { name = "top-level false", line = "false", at = 1, what = NOT_OBJ },
  { name = "top-level null", line = "null", at = 1, what = NOT_OBJ },
  { name = "top-level array after spaces", line = "  [1]", at = 3, what = NOT_OBJ },
  { name = "top-level junk", line = "x", at = 1, what = "'x' where a JSON object was expected" },
  { name = "top-level close brace", line = "}", at = 1, what = "'}' where a JSON object was expected" },

  -- strings and escapes
  { name = "unterminated string", line = '{"v":"abc', at = 6, what = "unterminated string" },
  { name = "unterminated key", line = '{"v', at = 2, what = "unterminated string" },
  { name = "string ending in a backslash", line = '{"v":"abc\\', at = 10, what = "unterminated string" },
  { name = "hex escape", line = [[{"v":"\x41"}]], at = 7, what = [[invalid escape '\x' in a string]] },
  { name = "capital U escape", line = [[{"v":"\U0041"}]], at = 7, what = [[invalid escape '\U' in a string]] },
  { name = "escaped single quote", line = [[{"v":"\'"}]], at = 7, what = [[invalid escape '\'' in a string]] },
  { name = "escaped tab byte", line = '{"v":"\\\t"}', at = 8, what = "an invalid escape in a string" },
  { name = "escaped 0xff byte", line = '{"v":"\\\xff"}', at = 8, what = "an invalid escape in a string" },
  { name = "escaped NUL byte", line = '{"v":"\\\0"}', at = 8, what = "a NUL byte in a string escape" },
  { name = "short unicode escape", line = [[{"v":"\u12"}]], at = 11, what = HEX4 },
  { name = "bad hex in unicode escape", line = [[{"v":"\u00G0"}]], at = 11, what = HEX4 },
  { name = "unicode escape cut by the line end", line = [[{"v":"\u00]], at = 9, what = HEX4 },
  { name = "lone low surrogate", line = [[{"v":"\udc00"}]], at = 7, what = LOW },
  { name = "reversed surrogate pair", line = [[{"v":"\ude00\ud83d"}]], at = 7, what = LOW },
  { name = "lone high surrogate", line = [[{"v":"\ud800"}]], at = 7, what = HIGH },
  { name = "high surrogate then text", line = [[{"v":"\ud800abcdef"}]], at = 7, what = HIGH },
  { name = "high surrogate then a BMP escape", line = [[{"v":"\ud800\u0041"}]], at = 13, what = HIGH },
  { name = "two high surrogates", line = [[{"v":"\ud800\ud800"}]], at = 13, what = HIGH },
  { name = "lone surrogate in a key", line = [[{"\udfff":1}]], at = 3, what = LOW },
  { name = "raw tab in a string", line = '{"v":"a\tb"}', at = 8, what = "control character 0x09 in a string (it must be escaped)" },
  { name = "raw carriage return in a string", line = '{"v":"a\rb"}', at = 8, what = "control character 0x0d in a string (it must be escaped)" },
  { name = "raw 0x01 in a string", line = '{"v":"\1"}', at = 7, what = "control character 0x01 in a string (it must be escaped)" },
  { name = "raw 0x1f in a key", line = '{"\31":1}', at = 3, what = "control character 0x1f in a string (it must be escaped)" },
  { name = "NUL byte in a string", line = '{"v":"a\0b"}', at = 8, what = [[a NUL byte in a string (write it as \u0000)]] },
  { name = "NUL byte in a key", line = '{"a\0":1}', at = 4, what = [[a NUL byte in a string (write it as \u0000)]] },

  -- NUL and control bytes outside strings
  { name = "NUL byte after the object", line = '{"v":1}\0', at = 8, what = "a NUL byte where " .. EOL .. " was expected" },
  { name = "NUL byte before a value", line = '{"v":\0' .. '1}', at = 6, what = "a NUL byte where a value was expected" },
  { name = "NUL byte first", line = '\0{"v":1}', at = 1, what = "a NUL byte where a JSON object was expected" },
  { name = "NUL byte before a key", line = '{"v":1,\0"w":2}', at = 8, what = "a NUL byte where a string key was expected" },
  { name = "form feed as whitespace", line = '{"v":\f1}', at = 6, what = "control character 0x0c where a value was expected" },
  { name = "vertical tab as whitespace", line = '{\v"v":1}', at = 2, what = "control character 0x0b where a string key was expected" },
  { name = "DEL outside a string", line = '{"v":1\127}', at = 7, what = "control character 0x7f where ',' or '}' was expected" },

  -- UTF-8
  { name = "0xff in a string", line = '{"v":"\xff"}', at = 7, what = "invalid UTF-8 (byte 0xff) in a string" },
  { name = "0xfe in a string", line = '{"v":"\xfe"}', at = 7, what = "invalid UTF-8 (byte 0xfe) in a string" },
  { name = "overlong 2-byte slash (C0 AF)", line = '{"v":"\xc0\xaf"}', at = 7, what = "invalid UTF-8 (byte 0xc0) in a string" },
  { name = "overlong 2-byte (C1 BF)", line = '{"v":"\xc1\xbf"}', at = 7, what = "invalid UTF-8 (byte 0xc1) in a string" },
  { name = "overlong 3-byte (E0 80 AF)", line = '{"v":"\xe0\x80\xaf"}', at = 7, what = "invalid UTF-8 (byte 0xe0) in a string" },
  { name = "overlong 4-byte (F0 80 80 AF)", line = '{"v":"\xf0\x80\x80\xaf"}', at = 7, what = "invalid UTF-8 (byte 0xf0) in a string" },
  { name = "UTF-8 high surrogate (ED A0 80)", line = '{"v":"\xed\xa0\x80"}', at = 7, what = "invalid UTF-8 (byte 0xed) in a string" },
  { name = "UTF-8 low surrogate (ED BF BF)", line = '{"v":"\xed\xbf\xbf"}', at = 7, what = "invalid UTF-8 (byte 0xed) in a string" },
  { name = "CESU-8 surrogate pair", line = '{"v":"\xed\xa0\xbd\xed\xb8\x80"}', at = 7, what = "invalid UTF-8 (byte 0xed) in a string" },
  { name = "above U+10FFFF (F4 90 80 80)", line = '{"v":"\xf4\x90\x80\x80"}', at = 7, what = "invalid UTF-8 (byte 0xf4) in a string" },
  { name = "F5 lead byte", line = '{"v":"\xf5\x80\x80\x80"}', at = 7, what = "invalid UTF-8 (byte 0xf5) in a string" },
  { name = "truncated 3-byte sequence", line = '{"v":"\xe2\x82"}', at = 7, what = "invalid UTF-8 (byte 0xe2) in a string" },
  { name = "truncated 4-byte sequence", line = '{"v":"\xf0\x9f\x98"}', at = 7, what = "invalid UTF-8 (byte 0xf0) in a string" },
  { name = "lead byte then ASCII", line = '{"v":"\xc3A"}', at = 7, what = "invalid UTF-8 (byte 0xc3) in a string" },
  { name = "lone continuation byte", line = '{"v":"\x80"}', at = 7, what = "invalid UTF-8 (byte 0x80) in a string" },
  { name = "continuation after valid text", line = '{"v":"\xc3\xa9\xbf"}', at = 9, what = "invalid UTF-8 (byte 0xbf) in a string" },
  { name = "invalid UTF-8 in a key", line = '{"\xff":1}', at = 3, what = "invalid UTF-8 (byte 0xff) in a string" },
  { name = "0xff as a value", line = '{"v":\xff}', at = 6, what = "byte 0xff where a value was expected" },
  { name = "non-breaking space as whitespace", line = '{"v":\xc2\xa01}', at = 6, what = "byte 0xc2 where a value was expected" },

  -- byte-order mark
  { name = "BOM at the start", line = '\xef\xbb\xbf{"v":1}', at = 1, what = "a byte-order mark (U+FEFF) at the start" },
  { name = "BOM after a space", line = ' \xef\xbb\xbf{"v":1}', at = 2, what = "byte 0xef where a JSON object was expected" },
  { name = "BOM before a value", line = '{"v":\xef\xbb\xbf1}', at = 6, what = "byte 0xef where a value was expected" },
}
