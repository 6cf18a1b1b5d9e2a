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
    set_target_properties(${_t} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_py_includes}")
  endforeach()
endfunction()
