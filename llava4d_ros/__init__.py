"""llava4d_ros: 4D scene understanding for ROS 2 with a LLaVA-4D model.

The generated ROS interfaces (`llava4d_ros.msg`, `llava4d_ros.srv`) may be installed in another
directory than this source tree (the no-ROS setup installs them into the virtual environment);
extend_path merges every `llava4d_ros` directory on sys.path into this one package.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = "0.1.0"
