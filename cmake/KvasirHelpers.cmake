# One helper per kind of target (STYLE.md): kvasir_cc_library, kvasir_cc_test, kvasir_cc_binary.
set(KVASIR_WARNINGS -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare)

function(_kvasir_common target)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${KVASIR_WARNINGS}>)
  if(KVASIR_WERROR)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Werror>)
  endif()
endfunction()

# kvasir_cc_library(NAME name SRCS ... DEPS ...)
function(kvasir_cc_library)
  cmake_parse_arguments(K "" "NAME" "SRCS;DEPS" ${ARGN})
  add_library(${K_NAME} STATIC ${K_SRCS})
  target_link_libraries(${K_NAME} PUBLIC ${K_DEPS})
  _kvasir_common(${K_NAME})
endfunction()

# kvasir_cc_binary(NAME name SRCS ... DEPS ...)
function(kvasir_cc_binary)
  cmake_parse_arguments(K "" "NAME" "SRCS;DEPS" ${ARGN})
  add_executable(${K_NAME} ${K_SRCS})
  target_link_libraries(${K_NAME} PRIVATE ${K_DEPS})
  _kvasir_common(${K_NAME})
endfunction()

# kvasir_cc_test(NAME name SRCS ... DEPS ... [LABELS ...])
# Tests run from the source root so they find ../shared/models and tests/data.
function(kvasir_cc_test)
  cmake_parse_arguments(K "" "NAME" "SRCS;DEPS;LABELS" ${ARGN})
  if(NOT KVASIR_BUILD_TESTS)
    return()
  endif()
  add_executable(${K_NAME} ${K_SRCS})
  target_link_libraries(${K_NAME} PRIVATE ${K_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  _kvasir_common(${K_NAME})
  add_test(NAME ${K_NAME} COMMAND ${K_NAME} WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(${K_NAME} PROPERTIES
    ENVIRONMENT "KVASIR_BIN_DIR=${CMAKE_BINARY_DIR}/bin;KVASIR_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
  if(K_LABELS)
    set_tests_properties(${K_NAME} PROPERTIES LABELS "${K_LABELS}")
  endif()
endfunction()

# kvasir_add_subdirectory(dir): add_subdirectory unless `dir` (relative to the source root) is
# listed in KVASIR_SKIP_DIRS (a development aid for partial builds).
set(KVASIR_SKIP_DIRS "" CACHE STRING "Source directories to leave out of the build")
function(kvasir_add_subdirectory dir)
  file(RELATIVE_PATH rel ${CMAKE_SOURCE_DIR} ${CMAKE_CURRENT_SOURCE_DIR}/${dir})
  if(NOT rel IN_LIST KVASIR_SKIP_DIRS)
    add_subdirectory(${dir})
  endif()
endfunction()
