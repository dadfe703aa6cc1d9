/* Run a Lua script with Lua's standard libraries.
 *
 *   lua_script SCRIPT [ARGS...]    run SCRIPT with ARGS in the global table arg
 *   lua_script -e CODE             run one chunk of code
 *
 * Linked against Debian's liblua5.4.a (liblua5.4-dev): the interpreter of a
 * real language, with its garbage collector (lots of malloc, realloc and
 * free), string buffers, and the io and os libraries on top of stdio.
 * tests/test_real_programs.py compares the output with a native run.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s SCRIPT [ARGS...] | -e CODE\n", argv[0]);
        return 2;
    }
    lua_State *lua = luaL_newstate();
    luaL_openlibs(lua);
    lua_createtable(lua, argc, 0);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(lua, argv[i]);
        lua_rawseti(lua, -2, i - 1);
    }
    lua_setglobal(lua, "arg");
    int failed = strcmp(argv[1], "-e") == 0
        ? argc < 3 || luaL_dostring(lua, argv[2])
        : luaL_dofile(lua, argv[1]);
    if (failed)
        fprintf(stderr, "lua: %s\n", lua_isstring(lua, -1) ? lua_tostring(lua, -1) : "no code");
    lua_close(lua);
    return failed ? 1 : 0;
}
