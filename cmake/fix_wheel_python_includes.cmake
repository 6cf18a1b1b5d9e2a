# The ROS 2 wheels on the Python package index export `*__rosidl_generator_py` targets whose
# include directories are the wheel builder's (/opt/python/cp311-cp311/include/python3.11), which
# do not exist elsewhere. Point such targets at this interpreter's and numpy's include dirs.
# Guarded: a target whose include directories all exist (a normal ROS install) is left untouched.
function(llava4d_fix_wheel_python_includes)
  get_property(_targets DIRECTORY PROPERTY IMPORTED_TARGETS)
  set(_py_includes "")
  foreach(_t IN LISTS _targets)
    if(NOT _t MATCHES "__rosidl_generator_py$")
      continue()
    endif()
    get_target_property(_dirs ${_t} INTERFACE_INCLUDE_DIRECTORIES)
    set(_broken FALSE)
    foreach(_d IN LISTS _dirs)
      if(NOT _d MATCHES "^\\$<" AND NOT EXISTS "${_d}")
        set(_broken TRUE)
      endif()
    endforeach()
    if(NOT _broken)
      continue()
    endif()
    if(NOT _py_includes)
      execute_process(
        COMMAND "${Python3_EXECUTABLE}" -c
          "import sysconfig, numpy; print(sysconfig.get_paths()['include'] + ';' + numpy.get_include())"
        OUTPUT_VARIABLE _py_includes OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _rc)
      if(NOT _rc EQUAL 0)
        message(FATAL_ERROR "Could not ask ${Python3_EXECUTABLE} for its include dirs")
      endif()
    endif()
    message(STATUS "llava4d: ${_t} include dirs ${_dirs} do not exist; using ${_py_includes}")
    # BUILD_INTERFACE: needed to compile here, never exported (the venv may lie inside the
    # source tree, and CMake refuses to export include paths there).
    set(_build_includes "")
    foreach(_d IN LISTS _py_includes)
      list(APPEND _build_includes "$<BUILD_INTERFACE:${_d}>")
    endforeach()
    set_target_properties(${_t} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_build_includes}")
  endforeach()
endfunction()

# rosidl_generator_py adds the Python and NumPy include dirs to the generated target's PUBLIC
# include directories. When the interpreter's environment lies inside the source tree (a venv
# at the repository root) CMake refuses to export them; they are build-time only, so keep
# those entries as BUILD_INTERFACE. A normal ROS install (paths outside the source) is untouched.
function(llava4d_build_only_source_includes target)
  if(NOT TARGET ${target})
    return()
  endif()
  get_target_property(_dirs ${target} INTERFACE_INCLUDE_DIRECTORIES)
  if(NOT _dirs)
    return()
  endif()
  set(_out "")
  foreach(_d IN LISTS _dirs)
    if(_d MATCHES "^\\$<" OR NOT _d MATCHES "^${CMAKE_SOURCE_DIR}/")
      list(APPEND _out "${_d}")
    else()
      list(APPEND _out "$<BUILD_INTERFACE:${_d}>")
    endif()
  endforeach()
  set_target_properties(${target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_out}")
endfunction()
