/*
 * mod_json.c: moonwait.json, a private lua-cjson instance. The host keeps
 * its own instance (script.c) for records, so a script that changes
 * settings here (encode_empty_table_as_object, ...) cannot change how
 * records are read or written.
 */
#include <lauxlib.h>

#include "modules.h"

int mod_json_open(lua_State *L)
{
    lua_pushcfunction(L, luaopen_cjson);
    lua_call(L, 0, 1); /* a fresh instance with its own configuration */
    return 1;
}
