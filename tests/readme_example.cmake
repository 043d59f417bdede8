# Fails unless README.md shows examples/minimal.cpp verbatim (the README's example is the built one).
file(READ ${SOURCE_DIR}/README.md readme)
file(READ ${SOURCE_DIR}/examples/minimal.cpp example)
string(FIND "${readme}" "${example}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "README.md does not contain examples/minimal.cpp verbatim; copy the file into the README")
endif()
