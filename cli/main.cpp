#include "app.h"

int main(int argc, char** argv) { return zaptid::cli::main(argc, argv); }
