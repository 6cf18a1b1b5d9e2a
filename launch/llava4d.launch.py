"""Start the llava4d node: `ros2 launch llava4d_ros llava4d.launch.py [arg:=value ...]`.

Topics are remapped here, parameters come from config/llava4d.yaml (params_file), and a few
common ones can be overridden from the command line. Defaults fit realsense2_camera with
align_depth.enable:=true.
"""

from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription


def generate_launch_description():
    args = [
        DeclareLaunchArgument("namespace", default_value="", description="Node namespace"),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution(
                [FindPackageShare("llava4d_ros"), "config", "llava4d.yaml"]),
            description="ROS 2 parameters file for the node"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="Use /clock (true when replaying a bag)"),
        DeclareLaunchArgument("rgb_topic", default_value="/camera/color/image_raw"),
        DeclareLaunchArgument("depth_topic",
                              default_value="/camera/aligned_depth_to_color/image_raw",
                              description="Depth registered to the rgb image (16UC1 or 32FC1)"),
        DeclareLaunchArgument("camera_info_topic", default_value="/camera/color/camera_info"),
        DeclareLaunchArgument("model_path", default_value="",
                              description="Local model directory; empty: the embedded default"),
        DeclareLaunchArgument("device", default_value="auto", description="auto|cpu|cuda"),
        DeclareLaunchArgument("world_frame", default_value="map"),
        DeclareLaunchArgument("log_level", default_value="info"),
    ]
    node = Node(
        package="llava4d_ros",
        executable="llava4d_node",
        name="llava4d",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "use_sim_time": PythonExpression(
                    ["'", LaunchConfiguration("use_sim_time"), "'.lower() == 'true'"]),
                "model_path": LaunchConfiguration("model_path"),
                "device": LaunchConfiguration("device"),
                "world_frame": LaunchConfiguration("world_frame"),
            },
        ],
        remappings=[
            ("rgb/image", LaunchConfiguration("rgb_topic")),
            ("depth/image", LaunchConfiguration("depth_topic")),
            ("camera_info", LaunchConfiguration("camera_info_topic")),
        ],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
    )
    return LaunchDescription([*args, node])
