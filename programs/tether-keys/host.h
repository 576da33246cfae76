/* tether-keys host ...: per-host exchange keys. */
#pragma once

int cmd_host(int argc, char **argv);
